"""A small read-only HTTP server for the monitor page, its live feed and the canary exporter.

GET and HEAD only, one request per connection, bounded request heads, and three guards:
a listener beyond loopback needs a key (`Authorization: Bearer`, compared in constant time);
on loopback the Host header must name loopback (a web page elsewhere cannot reach it by DNS
rebinding); every answer forbids sniffing and caching, and pages get a same-origin-only CSP.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from flashspark.errors import InputError
from flashspark.recipe.rules import is_loopback

MAX_HEAD_BYTES = 8192
READ_TIMEOUT_S = 10.0
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "[::1]"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes


Page = Callable[[], Awaitable[Response]]
Stream = Callable[[], AsyncIterator[bytes]]


@dataclass
class LocalServer:
    """Serves `pages` (whole answers) and `streams` (server-sent events) at their paths."""

    pages: dict[str, Page] = field(default_factory=dict)
    streams: dict[str, Stream] = field(default_factory=dict)
    key: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen; return the base URL. Beyond loopback without a key is refused."""
        if not is_loopback(self.host) and not self.key:
            raise InputError(
                f"a listener on {self.host} would be reachable from other machines without a key",
                key="host",
                value=self.host,
                fix="keep it on 127.0.0.1, or give a key (--key-env NAME) that clients send as a Bearer token",
            )
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the server is closing
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            if len(head) > MAX_HEAD_BYTES:
                raise ValueError("head too large")
            method, path, headers = _parse_head(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, UnicodeDecodeError):
            await _answer(writer, Response(400, "text/plain", b"bad request\n"))
            return
        head_only = method == "HEAD"
        refusal = self._refusal(method, headers)
        if refusal is not None:
            await _answer(writer, refusal, head_only=head_only)
        elif path in self.streams:
            await self._stream(writer, self.streams[path]())
        elif path in self.pages:
            await _answer(writer, await self.pages[path](), head_only=head_only)
        else:
            await _answer(writer, Response(404, "text/plain", b"not found\n"), head_only=head_only)

    def _refusal(self, method: str, headers: dict[str, str]) -> Response | None:
        if method not in ("GET", "HEAD"):
            return Response(405, "text/plain", b"read only\n")
        if self.key is not None:
            given = headers.get("authorization", "")
            # The head was decoded as latin-1, byte for byte: compare the bytes the client sent.
            if not hmac.compare_digest(given.encode("latin-1"), f"Bearer {self.key}".encode()):
                return Response(401, "text/plain", b"a Bearer key is required\n")
        elif is_loopback(self.host) and host_name(headers.get("host", "")) not in _LOOPBACK_NAMES:
            return Response(421, "text/plain", b"this server answers only requests addressed to loopback\n")
        return None

    async def _stream(self, writer: asyncio.StreamWriter, events: AsyncIterator[bytes]) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
            b"X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        async for event in events:
            writer.write(event)
            await writer.drain()


def host_name(host_header: str) -> str:
    """The host part of a Host header, port dropped ("[::1]:80" -> "[::1]", "localhost:8" -> "localhost")."""
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0].lower()


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("not an HTTP/1.x request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError("malformed header")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1].split("?", 1)[0], headers


_PHRASES = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    421: "Misdirected Request",
    503: "Service Unavailable",
}


async def _answer(writer: asyncio.StreamWriter, response: Response, *, head_only: bool = False) -> None:
    headers = [
        f"HTTP/1.1 {response.status} {_PHRASES.get(response.status, 'Status')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
    ]
    if response.content_type.startswith("text/html"):
        headers.append(f"Content-Security-Policy: {CSP}")
    if response.status == 401:
        headers.append('WWW-Authenticate: Bearer realm="flashspark"')
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else response.body))
    await writer.drain()
