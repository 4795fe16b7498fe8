"""How long from a fault to an alert? A server starts to garble; when does `flashspark watch` raise its
alert, and when does a real Prometheus, scraping the watch's exporter, fire FlashSparkCanaryFailing?

The server is a stand-in (tests/standin.py) that answers the smoke and the agent prompt correctly
until the fault, then with CJK junk: the one fault a real engine will not produce on demand. The watch
is the real `flashspark watch` process; Prometheus is the Debian binary with the rendered rules.
Issue 16 asks that a fault is caught within two canary intervals.

    python benchmarks/fault_to_alert.py [--interval 5] [--failures 2] [--scrape 5] [--runs 3]

A number printed here is a measurement of this run on this machine only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.client_bench import free_port  # noqa: E402
from tests.prometheus_server import firing, start_prometheus  # noqa: E402
from tests.standin import Reply, StandIn, stream_reply  # noqa: E402

from flashspark.recipe import resolve_recipe  # noqa: E402

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def canary_alert_firing(port: int) -> bool:
    try:
        return any(a["labels"]["alertname"] == "FlashSparkCanaryFailing" for a in firing(port))
    except OSError:
        return False  # Prometheus still starting


def one_run(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    sick = {"on": False}

    def reply(request: dict[str, Any]) -> Reply:
        last = str(request["messages"][-1]["content"])
        text = last.split("Repeat after me: ", 1)[1] if "Repeat after me: " in last else "Read the traceback first."
        return stream_reply([(0.0, "的" * 60 if sick["on"] else text)], completion_tokens=12)

    exporter, prom_port = free_port(), free_port()
    recipe = resolve_recipe(profile="local-cpu", sets=[f"watch.exporter_port={exporter}"]).recipe
    with StandIn() as server:
        server.responder = reply
        prometheus = start_prometheus(recipe, folder, prom_port, interval_s=args.scrape)
        watch = subprocess.Popen(
            [
                FLASHSPARK,
                "watch",
                "--base-url",
                server.url,
                "--interval",
                str(args.interval),
                "--failures-to-alert",
                str(args.failures),
                "--exporter",
                f"127.0.0.1:{exporter}",
                "--out",
                str(folder / "watch"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"FLASHSPARK_HOME": str(folder / "home"), "PATH": "/usr/bin:/bin"},
        )
        try:
            time.sleep(args.interval * 2.5)  # healthy rounds first, and Prometheus up
            fault = time.time()
            sick["on"] = True
            fired = None
            while fired is None and time.time() - fault < args.interval * 10 + args.scrape * 6:
                time.sleep(0.2)
                if canary_alert_firing(prom_port):
                    fired = time.time()
        finally:
            watch.terminate()
            watch.wait(timeout=60)
            prometheus.terminate()
            prometheus.wait(timeout=30)
    journal = [json.loads(line) for line in (folder / "watch" / "canary.jsonl").read_text().splitlines()]
    alert = next(e["t"] for e in journal if e["event"] == "alert")
    return {"journal_s": alert - fault, "prometheus_s": (fired - fault) if fired else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=5.0, help="canary interval, seconds")
    parser.add_argument("--failures", type=int, default=2, help="failed rounds in a row that alert")
    parser.add_argument("--scrape", type=float, default=5.0, help="Prometheus scrape and evaluation interval")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as folder:
            rows.append(one_run(args, Path(folder)))
        print(
            f"run {run}: fault -> journal alert {rows[-1]['journal_s']:.2f} s, "
            f"-> Prometheus firing {rows[-1]['prometheus_s']:.2f} s"
        )
    bound = args.failures * args.interval
    journal = [r["journal_s"] for r in rows]
    prom = [r["prometheus_s"] for r in rows]
    print(f"interval {args.interval:g} s, {args.failures} failures to alert, scrape/eval {args.scrape:g} s")
    print(
        f"fault -> alert in the journal: median {statistics.median(journal):.2f} s, max {max(journal):.2f} s "
        f"(bound: {args.failures} intervals = {bound:g} s; ratio max/bound {max(journal) / bound:.2f})"
    )
    print(f"fault -> Prometheus firing: median {statistics.median(prom):.2f} s, max {max(prom):.2f} s")


if __name__ == "__main__":
    main()
