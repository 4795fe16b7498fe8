"""Terminal output shared by every command: stdout for data, stderr for people, errors and progress.

Rich is imported on first use, not at start-up: `flashspark --help` and tab completion never
draw a table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flashspark.errors import FlashsparkError, PhaseFailed, Problem, RecipeInvalid
from flashspark.redact import redact_data, redact_exact

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console
    from rich.table import Table

    from flashspark.recipe import ResolvedRecipe


class LazyConsole:
    """A Rich console made on first use; off a terminal 120 columns wide (logs and CI read better wider)."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            self._console = Console(
                stderr=self._stderr, highlight=False, soft_wrap=True, width=None if stream.isatty() else 120
            )
        return self._console

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.real.print(*objects, **kwargs)

    @property
    def is_terminal(self) -> bool:
        return self.real.is_terminal


class RedactingStream:
    """stdout or stderr, with registered secrets and URL passwords masked from every write: whatever
    prints (a table, an error, JSON, a progress line), a secret does not reach the terminal or a log."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(redact_exact(text))
        return len(text)

    def write_redacted(self, text: str) -> None:
        """Text whose secrets were masked inside its data already (JSON): written as it is."""
        self._inner.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def redact_output() -> None:
    """Route this process's stdout and stderr through RedactingStream (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))


out = LazyConsole(stderr=False)
err = LazyConsole(stderr=True)


def table(**kwargs: Any) -> Table:
    from rich.table import Table

    return Table(**kwargs)


def escape(text: str) -> str:
    """Text shown inside Rich markup: a `[` in a value must not start a tag."""
    return text.replace("[", "\\[")


def print_plain(text: str, *, err: bool = False) -> None:
    (globals()["err"] if err else out).print(text, markup=False)


def _write_data(text: str) -> None:
    stream = sys.stdout
    if isinstance(stream, RedactingStream):
        stream.write_redacted(text)
    else:
        stream.write(text)
    stream.flush()  # a supervising `up` keeps running after its first document


def print_json(payload: Any, *, indent: int | None = 2) -> None:
    """Data as JSON on stdout, secrets masked inside its strings (by shape, registered values). Not by
    key name: what is printed is built from the masked recipe, and its maps name secret settings
    (`config check`'s origins) without holding them."""
    _write_data(json.dumps(redact_data(payload, by_key=False), indent=indent, default=str) + "\n")


def print_model(report: BaseModel) -> None:
    """A typed report as JSON on stdout, as the model serialises it."""
    print_json(report.model_dump(mode="json"))


def print_ndjson(payload: Any) -> None:
    """One JSON document per line, for streams (logs --follow)."""
    print_json(payload, indent=None)


def error_payload(error: FlashsparkError) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "ok": False,
        "error": type(error).__name__,
        "message": error.message,
        "key": error.key,
        "value": None if error.value is None else str(error.value),
        "where": error.where,
        "fix": error.fix,
    }
    if isinstance(error, RecipeInvalid):
        payload["problems"] = [problem_payload(p) for p in error.problems]
    if isinstance(error, PhaseFailed):
        payload["phase"] = error.phase
        payload["log_tail"] = error.log_tail
    return payload


def print_error(error: FlashsparkError) -> None:
    if isinstance(error, RecipeInvalid):
        print_problems(error.problems)
        return
    err.print(f"[bold red]error:[/] {escape(error.describe())}", markup=True)


def problem_payload(problem: Problem) -> dict[str, Any]:
    return {
        "severity": problem.severity,
        "key": problem.key,
        "value": None if problem.value is None else str(problem.value),
        "rule": problem.rule,
        "fix": problem.fix,
        "where": problem.where,
    }


def check_payload(resolved: ResolvedRecipe | None, problems: Sequence[Problem]) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "ok": not any(p.severity == "error" for p in problems),
        "problems": [problem_payload(p) for p in problems],
    }
    if resolved is not None:
        payload["profile"] = resolved.recipe.profile.name
        payload["recipe"] = resolved.recipe.public_dict()
        payload["origins"] = resolved.all_origins()
    return payload


_STYLE = {"error": "bold red", "warning": "yellow", "note": "dim"}


def print_problems(problems: Sequence[Problem], *, heading: str | None = None) -> None:
    if not problems:
        return
    if heading:
        err.print(f"[bold]{heading}[/]")
    for problem in problems:
        style = _STYLE.get(problem.severity, "")
        shown = "<unset>" if problem.value is None else repr(problem.value)
        where = f" [dim]({problem.where})[/]" if problem.where else ""
        err.print(
            f"[{style}]{problem.severity}:[/] [bold]{problem.key}[/] = {escape(shown)}: {escape(problem.rule)}{where}"
        )
        err.print(f"  fix: {escape(problem.fix)}")


class ConsoleEvents:
    """Lifecycle progress on stderr: phases as they start and end, node log lines dimmed."""

    def __init__(self, *, show_logs: bool = True) -> None:
        self.show_logs = show_logs
        self._started: dict[str, float] = {}

    def phase(self, name: str, status: str, detail: str = "") -> None:
        mark = {"start": "[cyan]…[/]", "ok": "[green]✓[/]", "fail": "[bold red]✗[/]"}.get(status, status)
        suffix = f" [dim]{escape(detail)}[/]" if detail else ""
        err.print(f"{mark} {escape(name)}{suffix}")

    def log_line(self, node: str, line: str) -> None:
        if self.show_logs:
            err.print(f"[dim]  {node} | {escape(line[:300])}[/]")

    def note(self, text: str) -> None:
        err.print(f"  {escape(text)}")
