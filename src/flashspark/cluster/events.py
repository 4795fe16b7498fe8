"""How the lifecycle reports progress without printing: an observer the CLI implements."""

from __future__ import annotations

from typing import Protocol


class Events(Protocol):
    """Progress of long work: phases, log lines from nodes, and notes."""

    def phase(self, name: str, status: str, detail: str = "") -> None:
        """status is "start", "ok" or "fail"."""

    def log_line(self, node: str, line: str) -> None: ...

    def note(self, text: str) -> None: ...
