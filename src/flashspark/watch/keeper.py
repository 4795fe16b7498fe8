"""`flashspark watch`: canary rounds on a schedule, the exporter beside them, and a summary at the end;
and the canaries as the supervisor's watcher (`up --supervise --canary`), where an alert is a death.
"""

from __future__ import annotations

import asyncio
import glob
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import OpenAIClient
from flashspark.client.schema import Timeouts
from flashspark.cluster.events import Events
from flashspark.cluster.state import DeploymentState
from flashspark.cluster.supervisor import supervise
from flashspark.files import write_json
from flashspark.recipe.model import Recipe
from flashspark.watch.canary import Canary, CanarySettings, CanaryState, Journal, ProbeResult
from flashspark.watch.exporter import CONTENT_TYPE, exposition
from flashspark.watch.httpd import LocalServer, Response
from flashspark.watch.nodes import engine_check

WATCH_SCHEMA_VERSION = 1
JOURNAL = "canary.jsonl"
# Canary requests are short; a server that takes longer than this to start answering one is sick.
CANARY_TIMEOUTS = Timeouts(connect_s=10.0, first_byte_s=60.0, stall_s=30.0, total_s=600.0)


def next_slot(previous: float, interval_s: float, now: float) -> float:
    """When the next round starts: one interval after the previous start, or now when a round overran
    it (a late round is not followed by a burst of catch-up rounds)."""
    return max(previous + interval_s, now)


async def stopped(stop: asyncio.Event, wait_s: float) -> bool:
    """Wait up to `wait_s` for `stop`; True when it is set. Asked again after a timeout: a zero wait
    times out before the waiter ever runs, even when `stop` was set long ago."""
    try:
        await asyncio.wait_for(stop.wait(), max(0.0, wait_s))
    except TimeoutError:
        return stop.is_set()
    return True


class WatchSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = WATCH_SCHEMA_VERSION
    base_url: str
    journal: str
    settings: dict[str, Any]
    rounds: int
    requests: int
    tokens: int
    wall_s: float
    requests_per_hour: float
    tokens_per_hour: float
    failures: dict[str, int] = Field(default_factory=dict, description="Failed runs per probe.")
    alerts: list[dict[str, Any]] = Field(default_factory=list, description="Every alert raised, in order.")
    exporter_url: str | None = None
    last_round_failing: list[str] = Field(
        default_factory=list, description="Probes that failed in the last round (a watch too short to alert)."
    )

    @property
    def ok(self) -> bool:
        return not self.alerts and not self.last_round_failing


class ExporterHolder:
    """The exporter's page reads whichever canary is current (the supervisor makes a new one per boot)."""

    def __init__(self, state: CanaryState) -> None:
        self.state = state

    def server(self, *, host: str, port: int, key: str | None) -> LocalServer:
        async def metrics() -> Response:
            return Response(200, CONTENT_TYPE, exposition(self.state).encode())

        return LocalServer(pages={"/metrics": metrics}, host=host, port=port, key=key)


async def keep_watch(
    client: OpenAIClient,
    settings: CanarySettings,
    out_dir: Path,
    *,
    recipe: Recipe | None = None,
    rounds: int | None = None,
    duration_s: float | None = None,
    exporter: tuple[str, int] | None = None,
    exporter_key: str | None = None,
    stop: asyncio.Event | None = None,
    on_start: Callable[[str | None], None] | None = None,
    on_round: Callable[[int, list[ProbeResult]], None] | None = None,
) -> WatchSummary:
    """Canary rounds every `settings.interval_s` until `rounds`, `duration_s` or `stop`; watch.json written
    after every round, so an interrupted watch keeps its summary."""
    journal = Journal(out_dir / JOURNAL)
    canary = Canary(client, settings, journal, node_check=engine_check(recipe) if recipe is not None else None)
    holder = ExporterHolder(canary.state)
    server = holder.server(host=exporter[0], port=exporter[1], key=exporter_key) if exporter else None
    exporter_url = await server.start() if server is not None else None
    if on_start is not None:
        on_start(exporter_url)
    journal.write("start", base_url=client.api, settings=settings.model_dump(mode="json"), exporter=exporter_url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop = stop or asyncio.Event()
    summary = _summary(canary, client, journal, settings, started, exporter_url)
    try:
        next_start = started
        while rounds is None or canary.state.rounds < rounds:
            results = await canary.round()
            if on_round is not None:
                on_round(canary.state.rounds - 1, results)
            summary = _summary(canary, client, journal, settings, started, exporter_url)
            write_json(out_dir / "watch.json", summary.model_dump(mode="json"))
            if rounds is not None and canary.state.rounds >= rounds:
                break
            next_start = next_slot(next_start, settings.interval_s, loop.time())
            if duration_s is not None and next_start - started >= duration_s:
                break
            if await stopped(stop, next_start - loop.time()):
                break
    finally:
        journal.write("stop", rounds=canary.state.rounds)
        if server is not None:
            await server.close()
    return summary


def _summary(
    canary: Canary, client: OpenAIClient, journal: Journal, settings: CanarySettings, started: float, url: str | None
) -> WatchSummary:
    state = canary.state
    load = state.per_hour()
    return WatchSummary(
        base_url=client.api,
        journal=str(journal.path),
        settings=settings.model_dump(mode="json"),
        rounds=state.rounds,
        requests=state.requests,
        tokens=state.tokens,
        wall_s=round(asyncio.get_running_loop().time() - started, 3),
        requests_per_hour=round(load["requests_per_hour"], 1),
        tokens_per_hour=round(load["tokens_per_hour"], 1),
        failures=state.failures(),
        last_round_failing=state.last_failing,
        alerts=list(canary.raised),
        exporter_url=url,
    )


class CanaryWatcher:
    """The supervisor's watcher: canary rounds against the deployment it started; the first alert is a
    death. Each boot gets a fresh canary (streaks start over); one journal holds every boot's rounds and
    the supervisor's died / stopped / restarted events between them."""

    def __init__(self, recipe: Recipe, settings: CanarySettings, out_dir: Path) -> None:
        self.recipe = recipe
        self.settings = settings
        self.journal = Journal(out_dir / JOURNAL)
        self.holder: ExporterHolder | None = None

    async def first_failure(self, state: DeploymentState) -> str:
        async with OpenAIClient(state.base_url, api_key=self.recipe.api_key, timeouts=CANARY_TIMEOUTS) as client:
            canary = Canary(client, self.settings, self.journal, node_check=engine_check(self.recipe))
            if self.holder is not None:
                self.holder.state = canary.state
            loop = asyncio.get_running_loop()
            next_start = loop.time()
            while True:
                await canary.round()
                if canary.raised:
                    alert = canary.raised[0]
                    return (
                        f"canary {alert['probe']} failed {alert['failures_in_a_row']} rounds in a row: "
                        f"{alert['detail']}"
                    )
                next_start = next_slot(next_start, self.settings.interval_s, loop.time())
                await asyncio.sleep(max(0.0, next_start - loop.time()))

    def note(self, event: str, **details: object) -> None:
        self.journal.write(event, source="supervisor", **details)


def latest_journal(recipe: Recipe) -> Path | None:
    """The canary journal of this deployment's most recent watch (None: never watched)."""
    runs = Path(recipe.paths.runs_dir)
    pattern = f"*-{glob.escape(recipe.cluster.name)}-watch*/{JOURNAL}"
    found = sorted(runs.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


async def supervise_with_canary(recipe: Recipe, *, events: Events, max_restarts: int, run_dir: Path) -> None:
    """`up --supervise --canary`: the supervisor with the canaries as its watcher, and the exporter serving
    whichever boot's canary is current."""
    settings = CanarySettings.of(recipe)
    watcher = CanaryWatcher(recipe, settings, run_dir)
    watcher.holder = ExporterHolder(CanaryState())
    server = watcher.holder.server(host="127.0.0.1", port=recipe.watch.exporter_port, key=None)
    await server.start()
    try:
        await supervise(recipe, events=events, max_restarts=max_restarts, watcher=watcher)
    finally:
        await server.close()
