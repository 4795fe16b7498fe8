"""Counting prompt tokens from a model's tokenizer files, for servers without vLLM's POST /tokenize.

Exact-length prompts (`bench --input-tokens`, `bench depth`) are counted by the server itself when
it can; a server that cannot (not vLLM, or /tokenize switched off) is counted with the model's own
tokenizer files by the engine's transformers, in one long-lived process (loading a tokenizer takes
seconds, counting a prompt milliseconds). The count is the chat template applied with the
generation prompt, as vLLM counts a chat request.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from flashspark.engine.install import Engine, script_path
from flashspark.errors import EngineError, InputError

READY_TIMEOUT_S = 120.0


class TokenizerFiles:
    """`async with TokenizerFiles(engine, folder) as count: await count(messages)`."""

    def __init__(self, engine: Engine, folder: Path) -> None:
        if not (folder / "tokenizer_config.json").is_file() and not (folder / "tokenizer.json").is_file():
            raise InputError(
                f"{folder} holds no tokenizer files (tokenizer.json, tokenizer_config.json)",
                key="--tokenizer",
                value=str(folder),
                fix="point at the model's folder (the one with its tokenizer and chat template)",
            )
        self.engine = engine
        self.folder = folder
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> TokenizerFiles:
        self._process = await asyncio.create_subprocess_exec(
            str(self.engine.python),
            str(script_path("count_tokens.py")),
            str(self.folder),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            first = await asyncio.wait_for(self._line(), READY_TIMEOUT_S)
        except TimeoutError:
            first = {}
        if not first.get("ready"):
            await self.__aexit__()
            raise EngineError(
                f"the engine's transformers could not load the tokenizer in {self.folder}",
                where=str(self.folder),
                fix="check the folder is the model's (`flashspark engine status` for the engine)",
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _line(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            stderr = await self._process.stderr.read() if self._process.stderr is not None else b""
            raise EngineError(
                "the tokenizer process ended: " + stderr.decode(errors="replace").strip()[-300:],
                where=str(self.folder),
            )
        value = json.loads(line)
        return value if isinstance(value, dict) else {}

    async def __call__(self, messages: list[dict[str, Any]]) -> int:
        if self._process is None or self._process.stdin is None:
            raise EngineError("the tokenizer process is not running", where=str(self.folder))
        async with self._lock:  # one request, one answer, in order
            self._process.stdin.write(json.dumps({"messages": messages}).encode() + b"\n")
            await self._process.stdin.drain()
            answer = await self._line()
        if "count" not in answer:
            raise InputError(f"the tokenizer files cannot count this prompt: {answer.get('error')}", key="--tokenizer")
        return int(answer["count"])
