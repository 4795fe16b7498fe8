"""The monitor: a snapshot of the deployment every interval, and a feed that fans it out.

One `Sampler` reads the head's /health and /metrics and every node's engine; the `Feed` keeps
the latest snapshot for whoever asks (the web page's first paint, `--json`, the terminal) and
wakes every live subscriber (the page's event stream) on each new one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from flashspark.client import OpenAIClient, parse_metrics
from flashspark.client.metrics import MetricsSnapshot
from flashspark.errors import ClientError
from flashspark.watch.canary import latest_round
from flashspark.watch.httpd import LocalServer, Response
from flashspark.watch.nodes import NodeProbe
from flashspark.watch.view import CanaryView, MonitorSnapshot, ServingView, serving_view

KEEPALIVE_S = 15.0


class Sampler:
    """Takes snapshots of one deployment; rates are over the time since the previous snapshot."""

    def __init__(
        self,
        client: OpenAIClient,
        *,
        deployment: str,
        nodes: NodeProbe | None = None,
        canary_journal: Path | None = None,
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.nodes = nodes
        self.canary_journal = canary_journal
        self._previous: tuple[float, MetricsSnapshot] | None = None

    async def sample(self) -> MonitorSnapshot:
        nodes = await self.nodes() if self.nodes is not None else []
        now = time.time()
        error, window = None, None
        try:
            healthy = await self.client.health() == 200
            metrics = parse_metrics(await self.client.metrics_text())
        except (ClientError, ValueError) as failure:
            error = str(failure)[:300]
            serving = ServingView(health="unreachable")
            self._previous = None  # a restarted engine starts its counters at zero
        else:
            if self._previous is not None:
                window = round(now - self._previous[0], 3)
            serving = serving_view(self._previous[1] if self._previous else None, metrics, window)
            serving.health = "ok" if healthy else "failing"
            self._previous = (now, metrics)
        return MonitorSnapshot(
            t=round(now, 3),
            window_s=window,
            deployment=self.deployment,
            base_url=self.client.api,
            nodes=nodes,
            serving=serving,
            canary=self._canary(),
            error=error,
        )

    def _canary(self) -> CanaryView | None:
        if self.canary_journal is None:
            return None
        entry = latest_round(self.canary_journal)
        if entry is None:
            return None
        return CanaryView(
            t=entry["t"], ok=bool(entry.get("ok")), failing=entry.get("failing", []), alerts=entry.get("alerts", [])
        )


class Feed:
    """The latest snapshot, and a wake-up for every subscriber when a new one arrives."""

    def __init__(self) -> None:
        self.latest: MonitorSnapshot | None = None
        self._changed = asyncio.Condition()

    async def publish(self, snapshot: MonitorSnapshot) -> None:
        async with self._changed:
            self.latest = snapshot
            self._changed.notify_all()

    async def events(self) -> AsyncIterator[bytes]:
        """Server-sent events: the latest snapshot at once, then each new one; a comment line keeps
        idle connections open through proxies."""
        if self.latest is not None:
            yield _event(self.latest)
        while True:
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                snapshot = self.latest
            if snapshot is not None:
                yield _event(snapshot)


def _event(snapshot: MonitorSnapshot) -> bytes:
    return b"event: snapshot\ndata: " + snapshot.model_dump_json().encode() + b"\n\n"


async def run_monitor(sampler: Sampler, feed: Feed, *, interval_s: float, count: int | None = None) -> None:
    """Sample every `interval_s` (start to start) and publish, until cancelled or `count` snapshots."""
    loop = asyncio.get_running_loop()
    next_start = loop.time()
    taken = 0
    while count is None or taken < count:
        await feed.publish(await sampler.sample())
        taken += 1
        next_start = max(next_start + interval_s, loop.time())  # a slow read is not followed by a burst
        await asyncio.sleep(next_start - loop.time())


def _static(name: str, content_type: str) -> Response:
    body = resources.files("flashspark.watch").joinpath("static", name).read_bytes()
    return Response(200, content_type, body)


def web_server(feed: Feed, *, port: int = 0) -> LocalServer:
    """The monitor page on 127.0.0.1: the page, its script, the latest snapshot and the live feed."""

    async def page() -> Response:
        return _static("monitor.html", "text/html; charset=utf-8")

    async def script() -> Response:
        return _static("monitor.js", "text/javascript; charset=utf-8")

    async def style() -> Response:
        return _static("monitor.css", "text/css; charset=utf-8")

    async def latest() -> Response:
        if feed.latest is None:
            return Response(503, "application/json", json.dumps({"error": "no snapshot yet"}).encode())
        return Response(200, "application/json", feed.latest.model_dump_json().encode())

    return LocalServer(
        pages={"/": page, "/monitor.js": script, "/monitor.css": style, "/snapshot.json": latest},
        streams={"/events": feed.events},
        host="127.0.0.1",
        port=port,
    )
