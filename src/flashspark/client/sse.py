"""An incremental Server-Sent Events parser that does not care how the bytes are cut.

Feed it whatever the socket gives (half a line, three events, a lone CR) and
it yields each complete event once, exactly as if the stream had arrived in
one piece. Comments (`: keep-alive`) and fields other than `data`/`event`/`id`
are dropped; multi-line `data:` fields are joined with "\\n" as the spec says.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_EOL = re.compile(rb"[\r\n]")


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEParser:
    """Push bytes in with `feed`; complete events come out in order."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        return list(self._feed(chunk))

    def _feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        if self._pending_cr and chunk.startswith(b"\n"):
            # The CR of a CRLF arrived at the end of the previous chunk.
            chunk = chunk[1:]
        self._pending_cr = False
        self._buffer += chunk
        while True:
            line, found = self._next_line()
            if not found:
                return
            event = self._line(line)
            if event is not None:
                yield event

    def close(self) -> list[SSEEvent]:
        """End of stream: an event without its closing blank line is still delivered."""
        events = []
        if self._buffer:
            event = self._line(self._buffer.decode("utf-8", errors="replace"))
            self._buffer = b""
            if event is not None:
                events.append(event)
        final = self._dispatch()
        if final is not None:
            events.append(final)
        return events

    def _next_line(self) -> tuple[str, bool]:
        match = _EOL.search(self._buffer)
        if match is None:
            return "", False
        index = match.start()
        line = self._buffer[:index]
        rest = self._buffer[index + 1 :]
        if self._buffer[index] == 0x0D:
            if rest.startswith(b"\n"):
                rest = rest[1:]
            elif not rest:
                self._pending_cr = True
        self._buffer = rest
        return line.decode("utf-8", errors="replace"), True

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(data="\n".join(self._data), event=self._event or "message", id=self._id)
        self._data = []
        self._event = ""
        return event
