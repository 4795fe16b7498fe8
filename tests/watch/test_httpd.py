"""The read-only server behind the monitor page and the exporter: what it refuses, at the boundary.

Raw sockets, not a client library: the point is what arrives when a request is malformed, addressed to
another host (DNS rebinding), written to, or sent without the key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flashspark.errors import InputError
from flashspark.watch.httpd import CSP, MAX_HEAD_BYTES, LocalServer, Response, host_name


async def page() -> Response:
    return Response(200, "text/html; charset=utf-8", b"<p>hi</p>")


async def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def get(path: str = "/", host: str = "127.0.0.1", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


@contextlib.asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[LocalServer]:
    local = LocalServer(pages={"/": page}, **options)
    await local.start()
    try:
        yield local
    finally:
        await local.close()


async def test_a_page_carries_its_guards() -> None:
    async with serving() as server:
        status, headers, body = await raw(server.port, get("/?snapshots=3", host=f"127.0.0.1:{server.port}"))
        assert (status, body) == (200, b"<p>hi</p>")
        assert headers["content-security-policy"] == CSP and "script-src 'self'" in CSP
        assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
        assert headers["content-length"] == "9"


@pytest.mark.parametrize("host", ["localhost:80", "[::1]:8891", "LOCALHOST"])
async def test_loopback_names_are_served(host: str) -> None:
    async with serving() as server:
        assert (await raw(server.port, get(host=host)))[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "", "10.0.0.5:8891"])
async def test_a_request_addressed_to_another_host_is_refused(host: str) -> None:
    async with serving() as server:
        # A page on evil.example whose name was rebound to 127.0.0.1 sends Host: evil.example.
        status, _, body = await raw(server.port, get(host=host))
        assert status == 421 and b"loopback" in body


async def test_only_reads_are_served() -> None:
    async with serving() as server:
        status, headers, _ = await raw(server.port, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        assert status == 405
        status, headers, body = await raw(server.port, b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (status, headers["content-length"], body) == (200, "9", b"")
        assert (await raw(server.port, get("/nothing")))[0] == 404


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /\r\n\r\n",  # no version
        b"GET / SPDY/3\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\n Host: 127.0.0.1\r\n\r\n",  # folded header
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400(request_bytes: bytes) -> None:
    async with serving() as server:
        assert (await raw(server.port, request_bytes))[0] == 400


async def test_beyond_loopback_without_a_key_does_not_start() -> None:
    with pytest.raises(InputError, match="without a key") as refused:
        await LocalServer(pages={"/": page}, host="0.0.0.0").start()
    assert refused.value.fix is not None and "--key-env" in refused.value.fix


async def test_with_a_key_only_its_bearer_is_served() -> None:
    local = LocalServer(pages={"/": page}, key="s3cret-ü")
    await local.start()
    try:
        # with a key, the Host check gives way to the key: Prometheus may scrape by any name
        assert (await raw(local.port, get(host="node1:9464", extra="Authorization: Bearer s3cret-ü\r\n")))[0] == 200
        for wrong in ("", "Authorization: Bearer s3cret\r\n", "Authorization: s3cret-ü\r\n"):
            status, headers, body = await raw(local.port, get(extra=wrong))
            assert status == 401 and headers["www-authenticate"].startswith("Bearer") and b"s3cret" not in body
    finally:
        await local.close()


def test_host_names_drop_only_the_port() -> None:
    assert host_name("[::1]:8891") == "[::1]"
    assert host_name("LocalHost:1") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1"
