"""Phased readiness: process alive -> port open -> /health -> /v1/models, each with its own budget.

A hung server that "looks green" is the recipe users' top complaint, so every
phase checks that every engine is still alive while it waits and fails naming
the phase. The probes go through the project's own client (`flashspark.client`),
like every other request FlashSpark sends: one HTTP stack, one proxy policy
(none: FlashSpark always connects to the server directly, whatever HTTP_PROXY says).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flashspark.client import OpenAIClient, Timeouts
from flashspark.client.schema import PROBE_TIMEOUTS
from flashspark.cluster.events import Events
from flashspark.cluster.ports import port_open
from flashspark.cluster.reports import ApiProbe, ServedModel
from flashspark.errors import ClientError, PhaseFailed
from flashspark.recipe.model import Recipe

POLL_S = 0.5
T = TypeVar("T")


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


def probe_client(base_url: str, api_key: str | None, timeouts: Timeouts = PROBE_TIMEOUTS) -> OpenAIClient:
    """A client with short budgets, for asking a server how it is."""
    return OpenAIClient(base_url, api_key=api_key, timeouts=timeouts, max_connections=4)


async def wait_until_ready(
    target: ReadinessTarget, *, alive: Callable[[], str | None], events: Events
) -> dict[str, Any]:
    """Walk the phases; return the /v1/models entry of the served model.

    `alive` returns None while every engine lives, else a description of the one
    that died. Raises PhaseFailed naming the phase (the caller attaches log tails).
    """

    async def poll(phase: str, budget_s: float, check: Callable[[], Awaitable[T | None]], fix: str) -> T:
        events.phase(phase, "start")
        started = time.monotonic()
        while True:
            dead = alive()
            if dead is not None:
                events.phase(phase, "fail", dead)
                raise PhaseFailed(f"{dead} during phase {phase!r}", phase=phase, fix="read the log lines below")
            outcome = await check()
            if outcome is not None:
                events.phase(phase, "ok", f"{time.monotonic() - started:.1f} s")
                return outcome
            if time.monotonic() - started > budget_s:
                events.phase(phase, "fail", f"timed out after {budget_s:g} s")
                raise PhaseFailed(f"phase {phase!r} timed out after {budget_s:g} s", phase=phase, fix=fix)
            await asyncio.sleep(POLL_S)

    events.phase("process alive", "start")
    dead = alive()
    if dead is not None:
        events.phase("process alive", "fail", dead)
        raise PhaseFailed(dead, phase="process alive", fix="read the log lines below")
    events.phase("process alive", "ok")

    async with probe_client(target.base_url, target.api_key) as client:
        address = urlsplit(client.root)
        host, port = address.hostname or "127.0.0.1", address.port or 80

        async def check_port() -> bool | None:
            return True if await asyncio.to_thread(port_open, host, port) else None

        async def check_health() -> bool | None:
            try:
                return True if await client.health() == 200 else None
            except ClientError:
                return None

        async def check_models() -> dict[str, Any] | None:
            try:
                listed = await client.models()
            except ClientError:
                return None
            return next((m.model_dump() for m in listed if m.id == target.served_model_name), None)

        await poll(
            "port open",
            target.port_timeout_s,
            check_port,
            "raise lifecycle.port_timeout_s if the boot is just slow; otherwise read the log",
        )
        await poll(
            "/health",
            target.health_timeout_s,
            check_health,
            "the API answers but the engine is not healthy: read the log",
        )
        entry = await poll(
            "/v1/models",
            target.models_timeout_s,
            check_models,
            f"the server does not list {target.served_model_name!r}: check SERVED_MODEL_NAME",
        )
    if target.max_model_len is not None and entry.get("max_model_len") != target.max_model_len:
        raise PhaseFailed(
            f"the server reports max_model_len {entry.get('max_model_len')}, "
            f"the recipe asked for {target.max_model_len}",
            phase="/v1/models",
            fix="check the boot log for a reduced context (memory) or a wrong profile",
        )
    return entry


async def probe_api(
    base_url: str, api_key: str | None, *, metrics: bool = False, timeouts: Timeouts = PROBE_TIMEOUTS
) -> ApiProbe:
    """What a running server says now: /health status, served models, version (and raw /metrics)."""
    found = ApiProbe(base_url=base_url)
    async with probe_client(base_url, api_key, timeouts) as client:
        try:
            found.health = await client.health()
            found.models = [ServedModel(id=m.id, max_model_len=m.max_model_len) for m in await client.models()]
            found.version = await client.version()
            if metrics:
                found.metrics = await client.metrics_text()
        except ClientError as exc:
            found.error = exc.message
    return found
