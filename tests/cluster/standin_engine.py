"""A stand-in for `vllm serve`, for the supervisor's fault paths: it serves /health and /v1/models on
the port it is given, and a control file decides its fate: `ok`, `sick` (/health answers 503), `die`
(exits at once), `die-once` (turns the control back to `ok`, then exits: the next start serves, however soon the
supervisor makes it), `garble` (chat answers are CJK junk: serving, healthy and wrong, which only a canary
catches), `slow` (each chat answer waits a second, so a bench is still running when a test cuts it
short), `orphan` (leaves a child in a session of its own that keeps the API port, as a
crashed engine's leftover worker can; its pid in `<control>.orphan`). Its starts are appended to
`<control>.starts`. STANDIN_BOOT_LINES (split at `|`) are printed at start, as a boot log's lines;
STANDIN_BOOT_S delays the port's opening, as a real boot does (for a signal that lands mid-boot).

It stands in for the engine only where a real one will not fail on demand; the real engine's boots
are in tests/engine and tests/cluster/test_two_node_vllm.py.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def option(name: str) -> str:
    return sys.argv[sys.argv.index(name) + 1]


CONTROL = os.environ["STANDIN_CONTROL"]
PORT = int(option("--port"))
NAME = option("--served-model-name")
MAX_MODEL_LEN = int(option("--max-model-len"))


def mode() -> str:
    try:
        with open(CONTROL) as handle:
            return handle.read().strip()
    except FileNotFoundError:
        return "ok"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            status, body = (503, b"sick") if mode() == "sick" else (200, b"")
        elif self.path.endswith("/models"):
            status, body = (
                200,
                json.dumps({"object": "list", "data": [{"id": NAME, "max_model_len": MAX_MODEL_LEN}]}).encode(),
            )
        elif self.path == "/metrics":
            status, body = 200, b"# no speculative decoding here\n"
        else:
            status, body = 404, b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """Chat completions, streamed: the phrase after "Repeat after me: " (the smoke), else a plain
        sentence; in `garble` mode, junk."""
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length))
        if mode() == "slow":
            time.sleep(1.0)
        last = str(request["messages"][-1].get("content", ""))
        text = last.split("Repeat after me: ", 1)[1] if "Repeat after me: " in last else "Run the failing test first."
        if mode() == "garble":
            text = "的" * 40
        events = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}},
        ]
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def watch(server: ThreadingHTTPServer) -> None:
    while True:
        current = mode()
        if current == "die":
            os._exit(1)
        if current == "die-once":
            with open(CONTROL, "w") as handle:
                handle.write("ok")
            os._exit(1)
        if current == "orphan" and os.fork() == 0:
            os.setsid()  # out of the engine's process group: a stop of the group does not reach it
            with open(CONTROL + ".orphan", "w") as handle:
                handle.write(str(os.getpid()))
            time.sleep(600)
            os._exit(0)
        if current == "orphan":
            os._exit(1)  # the parent dies; the child keeps the inherited listening socket open
        time.sleep(0.1)


def main() -> None:
    with open(CONTROL + ".starts", "a") as handle:
        handle.write(f"{time.time()}\n")
    time.sleep(float(os.environ.get("STANDIN_BOOT_S", "0")))
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    threading.Thread(target=watch, args=(server,), daemon=True).start()
    # Lines a real engine logs at boot that a test needs verbatim (a backend that fell back).
    for line in os.environ.get("STANDIN_BOOT_LINES", "").split("|"):
        if line:
            print(line, flush=True)
    print(f"stand-in engine serving {NAME} on {PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
