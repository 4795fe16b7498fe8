"""The one place that maps FlashSpark's error types to process exit codes.

| code | meaning |
|------|---------|
| 0    | ok |
| 1    | unexpected error |
| 2    | config or usage |
| 3    | already running / state conflict |
| 4    | a gate or check failed |
| 5    | launch or cluster failure |
| 130  | interrupted |
"""

from __future__ import annotations

from flashspark.errors import (
    AlreadyRunning,
    ClientError,
    ClusterError,
    EngineError,
    FlashsparkError,
    InputError,
    ProvenanceError,
    RecipeError,
)

OK = 0
UNEXPECTED = 1
CONFIG = 2
CONFLICT = 3
CHECK_FAILED = 4
CLUSTER = 5
INTERRUPTED = 130


def exit_code_for(error: BaseException) -> int:
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(error, RecipeError | InputError):
        return CONFIG
    if isinstance(error, AlreadyRunning):
        return CONFLICT
    if isinstance(error, ClusterError | EngineError):
        return CLUSTER
    if isinstance(error, ClientError | ProvenanceError):
        return CHECK_FAILED
    if isinstance(error, FlashsparkError):
        return UNEXPECTED
    return UNEXPECTED
