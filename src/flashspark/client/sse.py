"""An incremental Server-Sent Events parser that does not care how the bytes are cut.

Feed it whatever the socket gives (half a line, three events, a lone CR) and
it yields each complete event once, exactly as if the stream had arrived in
one piece. Comments (`: keep-alive`) and fields other than `data`/`event`/`id`
are dropped; multi-line `data:` fields are joined with "\\n" as the spec says.
"""

from __future__ import annotations

from dataclasses import dataclass

# No chat chunk comes near this; an "event" that grows past it without a blank line is a broken
# or hostile stream, and holding (and re-scanning) it would cost memory and CPU without end.
MAX_EVENT_BYTES = 1 << 20


class SSEOverflow(ValueError):
    """An event grew past MAX_EVENT_BYTES without ending."""


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEParser:
    """Push bytes in with `feed`; complete events come out in order.

    Work happens per event, not per line: line endings are normalised to LF
    (a CR at the end of a chunk waits for the next one, in case it is half of
    a CRLF), the buffer is cut at blank lines, and the common one-line
    `data: ...` event takes a fast path. This keeps the parser off the hot
    path of a client reading 100k events per second.
    """

    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        # The unfinished event, kept as parts: joined and split only when a chunk can end it, so a
        # long event costs one scan of each chunk, not one of everything so far per chunk.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._cr_pending = False
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        events = (_parse_block(block) for block in self._blocks(chunk))
        return [event for event in events if event is not None]

    def feed_data(self, chunk: bytes) -> list[bytes]:
        """Only the `data` payloads, as bytes: what a JSON stream's reader needs, with nothing decoded twice."""
        payloads: list[bytes] = []
        for block in self._blocks(chunk):
            if block.startswith(b"data: ") and b"\n" not in block:
                payloads.append(block[6:])
                continue
            event = _parse_block(block)
            if event is not None:
                payloads.append(event.data.encode("utf-8"))
        return payloads

    def _blocks(self, chunk: bytes) -> list[bytes]:
        if self._cr_pending:
            chunk = b"\r" + chunk
            self._cr_pending = False
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
            self._cr_pending = True
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._pending and b"\n\n" not in chunk and self._pending[-1][-1:] + chunk[:1] != b"\n\n":
            self._keep([*self._pending, chunk])  # the event goes on
            return []
        buffer = b"".join([*self._pending, chunk]) if self._pending else chunk
        blocks = buffer.split(b"\n\n")
        self._keep([blocks.pop()])
        return blocks

    def _keep(self, parts: list[bytes]) -> None:
        self._pending = [part for part in parts if part]
        self._pending_size = sum(len(part) for part in self._pending)
        if self._pending_size > self.max_event_bytes:
            size, self._pending, self._pending_size = self._pending_size, [], 0
            raise SSEOverflow(f"an SSE event grew past {self.max_event_bytes:,} bytes ({size:,}) without ending")

    def close(self) -> list[SSEEvent]:
        """End of stream: an event without its closing blank line is still delivered."""
        if self._cr_pending:
            self._pending.append(b"\n")
            self._cr_pending = False
        block = b"".join(self._pending).strip(b"\n")
        self._pending, self._pending_size = [], 0
        event = _parse_block(block) if block else None
        return [event] if event is not None else []

    def close_data(self) -> list[bytes]:
        return [event.data.encode("utf-8") for event in self.close()]


def _parse_block(block: bytes) -> SSEEvent | None:
    """One event's lines (without the blank line that ended it)."""
    if block.startswith(b"data: ") and b"\n" not in block:
        return SSEEvent(data=block[6:].decode("utf-8", errors="replace"))
    data: list[str] = []
    event = ""
    event_id: str | None = None
    for raw in block.split(b"\n"):
        line = raw.decode("utf-8", errors="replace")
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value
    if not data:
        return None
    return SSEEvent(data="\n".join(data), event=event or "message", id=event_id)
