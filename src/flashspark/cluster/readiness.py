"""Phased readiness: process alive -> port open -> /health -> /v1/models, each with its own budget.

A hung server that "looks green" is the recipe users' top complaint, so every
phase checks that the engine process is still alive while it waits, streams
the log's new lines as progress, and fails naming the phase and the log's
last lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from flashspark.client.chat import normalize_base_url
from flashspark.cluster.events import Events
from flashspark.cluster.processes import port_open
from flashspark.errors import PhaseFailed
from flashspark.recipe.model import Recipe

POLL_S = 0.5
TAIL_LINES = 40


@dataclass
class LogFollower:
    """Reads the lines appended to a log file since the last call."""

    path: Path
    node: str
    offset: int = 0
    partial: str = ""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self.partial = lines.pop()
        return lines


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ReadinessTarget:
    base_url: str
    served_model_name: str
    max_model_len: int | None
    api_key: str | None
    port_timeout_s: float
    health_timeout_s: float
    models_timeout_s: float

    @classmethod
    def for_recipe(cls, recipe: Recipe, base_url: str) -> ReadinessTarget:
        """What the head must show, and how long each phase may take, by the recipe."""
        return cls(
            base_url=base_url,
            served_model_name=recipe.model.served_name,
            max_model_len=recipe.engine.max_model_len,
            api_key=recipe.api_key,
            port_timeout_s=recipe.lifecycle.port_timeout_s,
            health_timeout_s=recipe.lifecycle.health_timeout_s,
            models_timeout_s=recipe.lifecycle.models_timeout_s,
        )


async def wait_until_ready(
    target: ReadinessTarget,
    *,
    alive: Callable[[], str | None],
    followers: list[LogFollower],
    events: Events,
) -> dict[str, Any]:
    """Walk the phases; return the /v1/models entry of the served model.

    `alive` returns None while every engine process lives, else a description of
    the one that died. Raises PhaseFailed naming the phase and carrying log tails.
    """
    root, api = normalize_base_url(target.base_url)
    host, port = _host_port(root)
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}

    def pump() -> None:
        for follower in followers:
            for line in follower.new_lines():
                if line.strip():
                    events.log_line(follower.node, line)

    def failed(phase: str, message: str, fix: str) -> PhaseFailed:
        pump()
        tails = "\n".join(f"--- {f.node}: {f.path}\n{tail(f.path)}" for f in followers)
        return PhaseFailed(message, phase=phase, log_tail=tails, fix=fix)

    async def poll(phase: str, budget_s: float, check: Callable[[], Any], fix: str) -> Any:
        events.phase(phase, "start")
        started = time.monotonic()
        while True:
            pump()
            dead = alive()
            if dead is not None:
                events.phase(phase, "fail", dead)
                raise failed(phase, f"{dead} during phase {phase!r}", fix="read the log lines below")
            outcome = await check()
            if outcome is not None:
                events.phase(phase, "ok", f"{time.monotonic() - started:.1f} s")
                return outcome
            if time.monotonic() - started > budget_s:
                events.phase(phase, "fail", f"timed out after {budget_s:g} s")
                raise failed(phase, f"phase {phase!r} timed out after {budget_s:g} s", fix)
            await asyncio.sleep(POLL_S)

    events.phase("process alive", "start")
    dead = alive()
    if dead is not None:
        events.phase("process alive", "fail", dead)
        raise failed("process alive", dead, "read the log lines below")
    events.phase("process alive", "ok")

    async def check_port() -> bool | None:
        return True if await asyncio.to_thread(port_open, host, port) else None

    await poll(
        "port open",
        target.port_timeout_s,
        check_port,
        "raise lifecycle.port_timeout_s if the boot is just slow; otherwise read the log",
    )

    async with httpx.AsyncClient(headers=headers, timeout=10.0) as http:

        async def check_health() -> bool | None:
            try:
                response = await http.get(f"{root}/health")
            except httpx.HTTPError:
                return None
            return True if response.status_code == 200 else None

        await poll(
            "/health",
            target.health_timeout_s,
            check_health,
            "the API answers but the engine is not healthy: read the log",
        )

        async def check_models() -> dict[str, Any] | None:
            try:
                response = await http.get(f"{api}/models")
                listed = response.json().get("data", []) if response.status_code == 200 else []
            except (httpx.HTTPError, ValueError):
                return None
            for entry in listed:
                if entry.get("id") == target.served_model_name:
                    return dict(entry)
            return None

        entry: dict[str, Any] = await poll(
            "/v1/models",
            target.models_timeout_s,
            check_models,
            f"the server does not list {target.served_model_name!r}: check SERVED_MODEL_NAME",
        )
    if target.max_model_len is not None and entry.get("max_model_len") != target.max_model_len:
        raise failed(
            "/v1/models",
            f"the server reports max_model_len {entry.get('max_model_len')}, "
            f"the recipe asked for {target.max_model_len}",
            "check the boot log for a reduced context (memory) or a wrong profile",
        )
    return entry


def _host_port(root: str) -> tuple[str, int]:
    url = httpx.URL(root)
    return url.host, url.port or (443 if url.scheme == "https" else 80)


async def probe_api(base_url: str, api_key: str | None, *, metrics: bool = False) -> dict[str, Any]:
    """What a running server says now: /health status, served models, version (and raw /metrics)."""
    root = base_url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    found: dict[str, Any] = {"base_url": base_url, "health": None, "models": [], "version": None}
    async with httpx.AsyncClient(timeout=5.0, headers=headers) as http:
        try:
            found["health"] = (await http.get(f"{root}/health")).status_code
            listed = (await http.get(f"{base_url}/models")).json().get("data", [])
            found["models"] = [{"id": m.get("id"), "max_model_len": m.get("max_model_len")} for m in listed]
            version = await http.get(f"{root}/version")
            found["version"] = version.json().get("version") if version.status_code == 200 else None
            if metrics:
                answer = await http.get(f"{root}/metrics")
                found["metrics"] = answer.text if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            found["error"] = str(exc)
    return found
