"""SLO prediction end to end on the real engine: ladders measured, a prediction saved, the same traffic
measured with `bench workload --predicted`, and the prediction beside the measurement in results.json
and the report. How close the prediction lands is a benchmark's number (benchmarks/slo_prediction.py),
not an assertion: on a shared 2-core machine it moves from run to run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.conftest import Deployment

pytestmark = pytest.mark.engine

WORKLOAD = """name = "pair"
[traffic]
shape = "static"
concurrency = 2
input_tokens = 96
output_tokens = 12
[tune]
rounds = 2
warmup_rounds = 1
"""


def p95(values: list[float]) -> float:
    # numpy's default (linear) percentile, written out here rather than taken from the code under test
    ordered = sorted(values)
    position = (len(ordered) - 1) * 0.95
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_a_prediction_is_measured_by_the_same_traffic_and_kept_beside_it(
    local_deployment: Deployment, tmp_path: Path
) -> None:
    port = ("--set", f"VLLM_PORT={local_deployment.port}")
    depth, static, run = tmp_path / "depth", tmp_path / "static", tmp_path / "run"
    measured_depth = local_deployment.cli(
        "bench", "depth", "--contexts", "64,256", "--output-tokens", "12", "--out", str(depth), "--json", *port
    )  # fmt: skip
    assert measured_depth.returncode == 0, measured_depth.stderr
    measured_static = local_deployment.cli(
        "bench", "static", "--concurrency", "1,2", "--input-tokens", "64", "--max-tokens", "12",
        "--out", str(static), "--json", *port,
    )  # fmt: skip
    assert measured_static.returncode == 0, measured_static.stderr
    workload = tmp_path / "pair.toml"
    workload.write_text(WORKLOAD)
    saved = tmp_path / "slo.json"
    predicted = local_deployment.cli(
        "plan", "--workload", str(workload), "--predict-slo", "--ladder", str(depth), "--ladder", str(static),
        "--save", str(saved), *port,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    assert "TTFT p95 s" in predicted.stdout

    # Another traffic than the prediction's is refused before a request is sent.
    other = tmp_path / "other.toml"
    other.write_text(WORKLOAD.replace("concurrency = 2", "concurrency = 3"))
    refused = local_deployment.cli(
        "bench", "workload", "--workload", str(other), "--predicted", str(saved), "--out", str(tmp_path / "x"), *port
    )  # fmt: skip
    assert refused.returncode == 2 and "another traffic" in refused.stderr
    assert not (tmp_path / "x" / "requests.jsonl").exists()

    measured = local_deployment.cli(
        "bench", "workload", "--workload", str(workload), "--predicted", str(saved), "--out", str(run), "--json", *port
    )  # fmt: skip
    assert measured.returncode == 0, measured.stderr
    results = json.loads((run / "results.json").read_text())
    assert [c["cell"] for c in results["cells"]] == ["static-c2-warmup0", "static-c2-r0", "static-c2-r1"]
    check = results["slo"]
    assert check["prediction"] == json.loads(saved.read_text())
    requests = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    kept = [r for r in requests if "warmup" not in r["cell"]]
    assert check["measured_requests"] == len(kept) == 4 and all(r["error"] is None for r in kept)
    numbers = {n["name"]: n for n in check["numbers"]}
    ttft = numbers["ttft_p95_s"]
    assert ttft["measured"] == pytest.approx(p95([r["ttft_s"] for r in kept]), abs=1e-4)
    assert ttft["error"] == pytest.approx((ttft["predicted"] - ttft["measured"]) / ttft["measured"], abs=1e-3)
    decode = numbers["per_stream_decode_tokens_per_s"]
    assert decode["measured"] == pytest.approx(sum(r["decode_tokens_per_s"] for r in kept) / 4, abs=1e-3)
    assert check["warnings"] == []  # the ladders, the prediction and the server are one deployment

    report = local_deployment.cli("report", str(run))
    assert report.returncode == 0, report.stderr
    text = (run / "report.md").read_text()
    assert "## Predicted beside measured" in text and "| ttft_p95_s |" in text
