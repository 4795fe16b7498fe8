"""Reports for people from the JSON a run left behind: Markdown notes and PNG plots."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import cast

from flashspark.errors import InputError

# The file that says what a run directory holds -> (what wrote it, the module and function that
# report on it). First match wins; writers are imported when used (matplotlib costs a second).
RUN_KINDS: dict[str, tuple[str, str, str]] = {
    "tune.json": ("tune", "tune_report", "write_tune_report"),
    "results.json": ("bench static, staggered or rate", "checkpoint", "write_report"),
    "depth.json": ("bench depth", "depth_report", "write_depth_report"),
    "sessions.json": ("bench sessions", "sessions_report", "write_sessions_report"),
    "validation.json": ("validate", "validation_report", "write_validation_report"),
    "tools.json": ("tools", "validation_report", "write_tools_report"),
    "longdecode.json": ("longdecode", "validation_report", "write_longdecode_report"),
    "replay.json": ("replay", "traffic_report", "write_replay_report"),
    "record.json": ("record", "traffic_report", "write_record_report"),
    "soak.json": ("soak", "soak_report", "write_soak_report"),
}


def write_run_report(run_dir: Path) -> list[Path]:
    """Write report.md and the plots of whatever run `run_dir` holds; return the files written."""
    for name, (_, module, function) in RUN_KINDS.items():
        if (run_dir / name).is_file():
            writer = getattr(importlib.import_module(f"{__name__}.{module}"), function)
            return cast(Callable[[Path], list[Path]], writer)(run_dir)
    raise InputError(
        f"{run_dir} holds no run FlashSpark can report on",
        where=str(run_dir),
        fix="point at a run directory with one of: " + ", ".join(f"{n} ({k[0]})" for n, k in RUN_KINDS.items()),
    )
