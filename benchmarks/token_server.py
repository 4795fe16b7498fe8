"""A fast OpenAI-compatible stand-in that streams a known token stream and logs when it sent what.

For the client benchmark only: it answers /v1/models and streaming
/v1/chat/completions with `max_tokens` one-token chunks as fast as the socket
takes them, and records per request the wall-clock (time.time_ns, shared by
every process on the machine) of receipt, of the first content chunk and of
the last one. GET /log returns and clears that log. It uses uvloop when the
interpreter has it (the engine venv does), because a stdlib server would be
the bottleneck.

    python token_server.py PORT [PACE_MS] [PROCESSES]

With PACE_MS > 0 every token is sent PACE_MS after the previous one (the
first after PACE_MS too, so a client that times the empty role chunk shows as
early): a stream slow enough for any client to keep up, for timing error.
With 0 (the default) it sends as fast as the socket takes them, for throughput.
With PROCESSES > 1 that many processes share the port (SO_REUSEPORT), so the stand-in
is not what limits a many-core client; each keeps its own log, so a fetched /log then
holds one process's requests only (the throughput run does not need it). A request's
X-Request-ID header (AIPerf sends one) is logged beside the stand-in's own id, so such a
client can be matched request by request too.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

_LOG: list[dict[str, object]] = []
_COUNTER = 0
_PACE_S = 0.0
_PROCESS = 0
_MODEL = {"object": "list", "data": [{"id": "token-server", "object": "model", "max_model_len": 1 << 20}]}


def frame(payload: bytes) -> bytes:
    data = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global _COUNTER
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            received = time.time_ns()
            lines = head.decode().split("\r\n")
            _method, path, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if path.endswith("/chat/completions") or path.endswith("/completions"):
                request = json.loads(body)
                _COUNTER += 1
                rid = f"req-{_PROCESS}-{_COUNTER}"
                await stream(writer, request, rid, received, chat=path.endswith("/chat/completions"))
                if "x-request-id" in headers:
                    _LOG[-1]["client_id"] = headers["x-request-id"]
            else:
                payload = json.dumps(_LOG if path == "/log" else _MODEL).encode() if path != "/health" else b""
                if path == "/log":
                    _LOG.clear()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(payload), payload)
                )
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def stream(writer: asyncio.StreamWriter, request: dict, rid: str, received: int, *, chat: bool) -> None:
    tokens = int(request.get("max_tokens") or request.get("max_completion_tokens") or 16)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    prefix = (
        '{"id":"%s","object":"chat.completion.chunk","created":0,"model":"token-server","choices":[{"index":0,' % rid
    ).encode()
    if chat:
        role = frame(prefix + b'"delta":{"role":"assistant","content":""},"finish_reason":null}]}')
        token = frame(prefix + b'"delta":{"content":"tok "},"finish_reason":null}]}')
        last = frame(prefix + b'"delta":{"content":"tok "},"finish_reason":"length"}]}')
        writer.write(role)
    else:
        token = frame(prefix + b'"text":"tok ","finish_reason":null}]}')
        last = frame(prefix + b'"text":"tok ","finish_reason":"length"}]}')
    first = 0
    if _PACE_S:
        await writer.drain()
    for index in range(tokens):
        if _PACE_S:
            await asyncio.sleep(_PACE_S)
        writer.write(last if index == tokens - 1 else token)
        if index == 0:
            first = time.time_ns()
        if _PACE_S or index % 16 == 15:
            await writer.drain()
    done = time.time_ns()
    usage = (
        '{"id":"%s","object":"chat.completion.chunk","model":"token-server","choices":[],"usage":'
        '{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d}}' % (rid, tokens, tokens + 8)
    ).encode()
    writer.write(frame(usage) + frame(b"[DONE]") + b"0\r\n\r\n")
    await writer.drain()
    _LOG.append({"id": rid, "received_ns": received, "first_content_ns": first, "last_ns": done, "tokens": tokens})


async def main(port: int, parent: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=2048, reuse_port=True)
    async with server:
        while parent == 0 or os.getppid() == parent:  # a forked sibling ends with the first process
            await asyncio.sleep(0.5)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    _PACE_S = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0
    first = os.getpid()
    for _PROCESS in range(1, int(sys.argv[3]) if len(sys.argv) > 3 else 1):
        if os.fork() == 0:
            break
    else:
        _PROCESS = 0
    asyncio.run(main(int(sys.argv[1]), first if _PROCESS else 0))
