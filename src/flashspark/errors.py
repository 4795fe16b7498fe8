"""Every error FlashSpark raises on purpose, in one tree.

    FlashsparkError                 key, value, where, fix
    ├── RecipeError                 a profile, config file or --set is wrong
    │   └── RecipeInvalid           holds the list of Problems the rules found
    ├── InputError                  a file or argument given to a command cannot be used
    ├── ClusterError                launching, stopping or probing a deployment
    │   ├── AlreadyRunning          `up` while a deployment runs (exit 3)
    │   ├── PreflightFailed         a node failed a check before anything started
    │   ├── NodeUnreachable         ssh could not reach or log in to a node
    │   ├── PhaseFailed             a readiness phase failed or timed out
    │   └── NotRunning              a command needs a deployment and none runs
    ├── EngineError                 the local engine is missing or broken
    ├── BenchError                  a benchmark's client processes failed (not the server)
    ├── ProvenanceError             the image or model cache is not what the recipe says
    │   └── PatchFailed             a patch stage's anchor no longer matches (fail closed)
    └── ClientError                 talking to an OpenAI-compatible server
        ├── HTTPStatusError         a non-2xx answer
        ├── StreamError             a malformed or truncated SSE stream
        └── RequestTimeout          connect, first byte or stall budget exceeded

The CLI maps these types to exit codes (`flashspark.cli.exit_codes`); nothing
below the CLI prints or exits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class FlashsparkError(Exception):
    """Root of FlashSpark's errors: what is wrong, where, and how to fix it."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        value: object = None,
        where: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.key = key
        self.value = value
        self.where = where
        self.fix = fix

    def describe(self) -> str:
        """The message with its where and fix, as a person should read it."""
        lines = [self.message]
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.fix:
            lines.append(f"  fix:   {self.fix}")
        return "\n".join(lines)


class RecipeError(FlashsparkError):
    """A profile, configuration file or `--set` value cannot be used."""


@dataclass(frozen=True)
class Problem:
    """One broken (or suspicious) setting, found by a validation rule."""

    key: str
    value: object
    rule: str
    fix: str
    severity: str = "error"  # "error" | "warning" | "note"
    where: str | None = None

    def describe(self) -> str:
        shown = "<unset>" if self.value is None else repr(self.value)
        text = f"{self.key} = {shown}: {self.rule}"
        if self.where:
            text += f" ({self.where})"
        return f"{text}\n  fix: {self.fix}"


class RecipeInvalid(RecipeError):
    """The recipe broke one or more rules; `problems` lists every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        errors = [p for p in problems if p.severity == "error"]
        first = errors[0] if errors else None
        super().__init__(
            f"{len(errors)} problem(s) in the recipe",
            key=first.key if first else None,
            value=first.value if first else None,
            where=first.where if first else None,
            fix=first.fix if first else None,
        )
        self.problems = list(problems)

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.problems if p.severity == "error")


class InputError(FlashsparkError):
    """A file or argument given to a command cannot be used (a folder that is not a run, a bad list)."""


class ProvenanceError(FlashsparkError):
    """The runtime image or the model cache is not what the recipe says (exit 4)."""


class PatchFailed(ProvenanceError):
    """A patch stage's anchor did not match: the image build stops (fail closed)."""


class ClusterError(FlashsparkError):
    """Launching, stopping or probing a deployment failed."""


class AlreadyRunning(ClusterError):
    """`up` was asked for while a deployment is running."""


class PreflightFailed(ClusterError):
    """One or more checks failed on the nodes before anything was started."""

    def __init__(self, message: str, *, failed: Sequence[object], where: str | None, fix: str | None) -> None:
        super().__init__(message, where=where, fix=fix)
        self.failed = list(failed)


class NodeUnreachable(ClusterError):
    """ssh could not reach or log in to a node."""


class PhaseFailed(ClusterError):
    """A readiness phase failed or ran out of time; carries the log's last lines."""

    def __init__(
        self,
        message: str,
        *,
        phase: str,
        log_tail: str = "",
        where: str | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(message, key=phase, where=where, fix=fix)
        self.phase = phase
        self.log_tail = log_tail

    def describe(self) -> str:
        text = super().describe()
        if self.log_tail:
            text += "\n  last log lines:\n" + "\n".join("    " + line for line in self.log_tail.splitlines())
        return text


class NotRunning(ClusterError):
    """A command needs a running deployment and none was found."""


class EngineError(FlashsparkError):
    """The local vLLM engine or its model is missing or cannot be prepared."""


class BenchError(FlashsparkError):
    """A benchmark could not measure: one of its client processes failed or never started."""


class ClientError(FlashsparkError):
    """Talking to an OpenAI-compatible server failed."""


class HTTPStatusError(ClientError):
    """The server answered with a non-2xx status."""

    def __init__(self, message: str, *, status_code: int, body: str = "") -> None:
        super().__init__(message, key="status_code", value=status_code)
        self.status_code = status_code
        self.body = body


class StreamError(ClientError):
    """The SSE stream was malformed, carried an error object, or ended early."""


class RequestTimeout(ClientError):
    """A request exceeded its connect, first-byte or stall budget."""


def first_invalid(error: ValidationError, *, top: str = "(top level)") -> tuple[str, str]:
    """The first problem pydantic found, for a person: its dotted key (`top` when the whole document is
    wrong) and its message without pydantic's "Value error, " prefix."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or top
    return key, str(first["msg"]).removeprefix("Value error, ")
