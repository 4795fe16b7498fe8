"""A stand-in for the Hugging Face Hub's HTTP API, for tests only: one model repo at one commit,
served over the routes huggingface_hub uses to download a snapshot (`HF_ENDPOINT` points at it).
Nothing is downloaded from the network; the files are made by the test."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HubStandIn:
    def __init__(self, repo: str, commit: str, files: dict[str, bytes]) -> None:
        self.repo, self.commit, self.files = repo, commit, files
        self.downloads: list[str] = []  # file names served with a body
        self.authorization: set[str] = set()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                hub.answer(self, body=False)

            def do_GET(self) -> None:
                hub.answer(self, body=True)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def info(self) -> dict[str, Any]:
        siblings = [
            {"rfilename": name, "size": len(data), "lfs": {"sha256": sha(data), "size": len(data), "pointerSize": 134}}
            for name, data in self.files.items()
        ]
        return {"id": self.repo, "modelId": self.repo, "sha": self.commit, "siblings": siblings, "private": False}

    def tree(self) -> list[dict[str, Any]]:
        return [
            {
                "type": "file",
                "path": name,
                "size": len(data),
                "oid": hashlib.sha1(data).hexdigest(),
                "lfs": {"oid": sha(data), "size": len(data), "pointerSize": 134},
            }
            for name, data in self.files.items()
        ]

    def answer(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        self.authorization.add(handler.headers.get("Authorization", ""))
        path = handler.path.split("?", 1)[0]
        headers: dict[str, str] = {}
        if path.startswith(f"/api/models/{self.repo}/tree/"):
            data, headers["Content-Type"] = json.dumps(self.tree()).encode(), "application/json"
        elif path.startswith(f"/api/models/{self.repo}"):
            data, headers["Content-Type"] = json.dumps(self.info()).encode(), "application/json"
        elif path.startswith(f"/{self.repo}/resolve/"):
            name = path.split("/resolve/", 1)[1].split("/", 1)[1]
            if name not in self.files:
                return self.send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
            data = self.files[name]
            headers = {"X-Repo-Commit": self.commit, "ETag": f'"{sha(data)}"', "X-Linked-Size": str(len(data))}
            if body:
                self.downloads.append(name)
        else:
            return self.send(handler, 404, b"", {}, body)
        self.send(handler, 200, data, headers, body)

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
