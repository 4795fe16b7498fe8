"""HTTP/1.1 on asyncio's protocol layer: the bytes of a streamed answer, timed the moment they arrive.

Why not a general HTTP client: a benchmark client measures lateness, so the
clock must be read where the bytes enter the process, before any parsing,
before any coroutine wakes. Here a response is decoded inside the protocol's
`data_received` callback and handed on with the time that callback started;
nothing waits for the event loop's next turn. A synchronized burst of 64
streams' chunks then costs each stream only the callbacks ahead of it, and a
request costs one `transport.write` of pre-built bytes (aiohttp's request path
was ~300 µs of client CPU a request; benchmarks/client_bench.py).

What it speaks: requests with a Content-Length body; responses framed by
Content-Length, by chunked transfer coding (trailers skipped) or by the close
of the connection; keep-alive reuse through `ConnectionPool`; TLS when the URL
says https. No proxies, no redirects, no compression: an OpenAI-compatible
server answered directly, which is what a benchmark must measure.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools


class WireError(Exception):
    """The server broke HTTP: an unreadable status line, headers or chunk framing."""


class ConnectTimeout(OSError):
    """No TCP connection within the connect budget (an OSError, like a refused connection)."""


class Handler(Protocol):
    """What a connection tells about the one response it is reading."""

    def on_head(self, status: int, headers: dict[str, str]) -> None: ...

    def on_body(self, data: bytes, now_ns: int) -> None:
        """Body bytes (framing removed) and the perf_counter_ns at which their packet was read."""

    def on_end(self, error: Exception | None) -> None:
        """The response is complete (None) or can never be (the connection broke, or framing did)."""


@dataclass(frozen=True)
class Origin:
    """Where requests go: scheme, host, port, and the path prefix every request path is put under."""

    scheme: str
    host: str
    port: int
    prefix: str

    @classmethod
    def from_url(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def request_bytes(method: str, origin: Origin, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """One request, head and body, ready for a single write."""
    lines = [f"{method} {origin.prefix}{path} HTTP/1.1", f"Host: {origin.host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection reading one response at a time.

    The HTTP framing (status line, headers, chunked coding) is decoded by
    httptools (llhttp, the parser of Node.js and uvicorn) in C; its callbacks
    below only collect, and `data_received` hands the body bytes of one read
    to the handler in one piece.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = False
        self.closed = False
        # Taken from the idle pool (kept alive or opened ahead): the server may have closed it unseen.
        self.from_pool = False
        self._handler: Handler | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._pieces: list[bytes] = []
        self._interim = False  # a 1xx head was read: the real one follows
        self._in_body = False
        self._close_delimited = False
        self._complete = False
        self._keep_alive = False

    # --- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only the same interface.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()  # first: this is the arrival time of everything below
        if self._handler is None:
            # Bytes nobody asked for (a server talking on an idle keep-alive connection): never reuse it.
            self._close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._flush(now)
            self._finish(WireError(f"the response broke HTTP/1.1: {exc}"))
            return
        self._flush(now)
        if self._complete:
            self._complete = False
            self._finish(None)

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._handler is None:
            return
        if self._in_body and self._close_delimited:
            self._finish(None)  # the close is the end of this body
            return
        self._finish(ConnectionResetError(str(exc) if exc else "the server closed the connection mid-response"))

    # --- httptools callbacks ----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        headers, self._headers = self._headers, {}
        if status < 200:
            self._interim = True
            return
        self._in_body = True
        self._close_delimited = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        if self._handler is not None:
            self._handler.on_head(status, headers)

    def on_body(self, body: bytes) -> None:
        self._pieces.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        # Asked here: once this callback returns, llhttp resets for the next message.
        self._keep_alive = self._parser.should_keep_alive()

    # --- driving it -------------------------------------------------------------------

    def send(self, data: bytes, handler: Handler) -> None:
        """Write one request; its response goes to `handler`."""
        assert self.transport is not None and self._handler is None
        self._handler = handler
        self.reusable = False
        self._in_body = False
        self._keep_alive = False
        self.transport.write(data)

    def abort(self) -> None:
        """Drop the connection now (a stalled or abandoned response)."""
        self._handler = None
        self._close()

    def _close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def _flush(self, now: int) -> None:
        if not self._pieces:
            return
        pieces, self._pieces = self._pieces, []
        if self._handler is not None:
            self._handler.on_body(pieces[0] if len(pieces) == 1 else b"".join(pieces), now)

    def _finish(self, error: Exception | None) -> None:
        handler, self._handler = self._handler, None
        self._in_body = False
        if error is None and not self.closed and self._keep_alive:
            self.reusable = True
        else:
            self._close()
        if handler is not None:
            handler.on_end(error)


class ConnectionPool:
    """Keep-alive connections to one origin, at most `limit` open at once.

    A request holds a slot from the moment it asks for a connection until its
    response ends, so in-flight requests never exceed `limit` and an idle
    connection is only opened when none is waiting.
    """

    def __init__(self, origin: Origin, *, limit: int, connect_timeout_s: float) -> None:
        self.origin = origin
        self.connect_timeout_s = connect_timeout_s
        self._slots = asyncio.Semaphore(limit)
        self._slots_total = limit
        self._idle: deque[Connection] = deque()
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if origin.scheme == "https" else None
        self._all: set[Connection] = set()

    async def acquire(self) -> Connection:
        await self._slots.acquire()
        try:
            while self._idle:
                connection = self._idle.pop()
                if connection.reusable and not connection.closed:
                    connection.from_pool = True
                    return connection
                self._all.discard(connection)
            return await self._open()
        except BaseException:
            self._slots.release()
            raise

    async def prewarm(self, count: int) -> int:
        """Open connections until `count` (at most the cap) wait idle; returns how many do.

        For the pause before a burst: connections in use then are not counted against the cap.
        """
        self._idle = deque(c for c in self._idle if c.reusable and not c.closed)
        self._all = {c for c in self._all if not c.closed}
        missing = min(count, self._slots_total) - len(self._idle)
        if missing > 0:
            opened = await asyncio.gather(*(self._open() for _ in range(missing)))
            for connection in opened:
                connection.reusable = True  # fresh and unused: fit for a first request
            self._idle.extend(opened)
        return len(self._idle)

    async def open_fresh(self) -> Connection:
        """A new connection for a slot already held (the retry after a stale keep-alive one)."""
        return await self._open()

    def release(self, connection: Connection) -> None:
        if connection.reusable and not connection.closed:
            self._idle.append(connection)
        else:
            connection.abort()
            self._all.discard(connection)
        self._slots.release()

    async def _open(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(
                    Connection,
                    self.origin.host,
                    self.origin.port,
                    ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl else None,
                )
        except TimeoutError:
            where = f"{self.origin.host}:{self.origin.port}"
            raise ConnectTimeout(f"no connection to {where} within {self.connect_timeout_s:g} s") from None
        self._all.add(connection)
        connection.from_pool = False
        return connection

    def close(self) -> None:
        for connection in self._all:
            connection.abort()
        self._all.clear()
        self._idle.clear()
