"""The predictor's ladders read from run directories, and a prediction put beside a measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flashspark.bench.depth import DepthPoint, DepthResults
from flashspark.bench.ladders import read_ladders, slo_check
from flashspark.bench.records import RequestRecord
from flashspark.bench.results import BenchResults
from flashspark.bench.stats import CellSummary
from flashspark.errors import InputError
from flashspark.pins import Pins
from flashspark.plan.slo import SchedulerKnobs, predict_slo
from flashspark.recipe.workload import Workload

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


def depth_run(folder: Path, points: list[tuple[int, float, float]]) -> Path:
    folder.mkdir(parents=True)
    results = DepthResults(
        created_at="2026-12-02T00:00:00+00:00",
        base_url="http://127.0.0.1:1/v1",
        model="m",
        max_model_len=8192,
        output_tokens=32,
        repeats=2,
        ladder=sorted({d for d, _, _ in points}),
        rows=[],
        points=[
            DepthPoint(depth=d, repeat=i, prompt_tokens=d, tokenized=d, ok=True, ttft_s=t, decode_tokens_per_s=r)
            for i, (d, t, r) in enumerate(points)
        ],
        pins=Pins(),
    )
    (folder / "depth.json").write_text(results.model_dump_json())
    return folder


def static_run(folder: Path, input_tokens: int | None, rates: dict[int, list[float]], shape: str = "static") -> Path:
    folder.mkdir(parents=True)
    cells = [
        CellSummary(
            cell=f"static-c{level}-r{r}",
            shape=shape,
            level=level,
            round=r,
            per_stream_decode_tokens_per_s_mean=rate,
            spec_decode_acceptance_length=5.0 + r,
            spec_decode_per_position_acceptance_rates=[1.0, 0.5 + 0.1 * r],
        )
        for level, values in rates.items()
        for r, rate in enumerate(values)
    ]
    results = BenchResults(
        shape=shape,
        options={"input_tokens": input_tokens, "max_tokens": 64},
        recipe={
            "model": {"id": "local:m"},
            "engine": {"max_num_seqs": 16, "max_num_batched_tokens": 4096},
            "speculative": {"method": "ngram", "num_speculative_tokens": 5},
        },
        cells=cells,
    )
    (folder / "results.json").write_text(results.model_dump_json())
    return folder


def test_the_ladders_take_the_fastest_repeat_per_depth_and_the_median_round_per_level(tmp_path: Path) -> None:
    depth = depth_run(tmp_path / "d", [(64, 1.31, 18.0), (64, 0.16, 19.0), (256, 0.43, 54.0), (256, 0.42, 55.0)])
    static = static_run(tmp_path / "s", 128, {1: [37.0, 55.0, 50.0], 4: [30.0]})
    ladders = read_ladders([static, depth])  # any order
    assert [(p.tokens, p.ttft_s, p.decode_tokens_per_s) for p in ladders.prefill] == [
        (64, 0.16, 19.0),
        (256, 0.42, 55.0),
    ]
    assert [(p.concurrency, p.per_stream_decode_tokens_per_s) for p in ladders.decode] == [(1, 50.0), (4, 30.0)]
    one = ladders.decode[0]
    assert one.context_tokens == 128 + 64 / 2
    assert one.tokens_per_step == 6.0  # median of 5, 6, 7
    assert one.acceptance_by_position == [1.0, 0.6]
    assert ladders.measured_with == {
        "model": "local:m",
        "num_speculative_tokens": 5,
        "max_num_seqs": 16,
        "max_num_batched_tokens": 4096,
    }


def test_two_static_runs_at_two_prompt_lengths_are_two_ladders(tmp_path: Path) -> None:
    depth = depth_run(tmp_path / "d", [(256, 0.4, 50.0)])
    short = static_run(tmp_path / "s1", 128, {1: [50.0]})
    long = static_run(tmp_path / "s2", 2048, {1: [20.0]})
    ladders = read_ladders([depth, short, long])
    assert sorted(p.context_tokens for p in ladders.decode) == [160.0, 2080.0]
    again = static_run(tmp_path / "s3", 128, {1: [51.0]})
    with pytest.raises(InputError, match="same prompt length"):
        read_ladders([depth, short, again])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: [depth_run(t / "d", [(256, 0.4, 50.0)])], "needs a bench static"),
        (lambda t: [static_run(t / "s", 128, {1: [50.0]})], "needs a bench depth"),
        (
            lambda t: [depth_run(t / "d", [(256, 0.4, 50.0)]), depth_run(t / "e", [(256, 0.4, 50.0)])],
            "two depth runs",
        ),
        (
            lambda t: [depth_run(t / "d", [(256, 0.4, 50.0)]), static_run(t / "s", None, {1: [50.0]})],
            "no fixed length",
        ),
        (
            lambda t: [depth_run(t / "d", [(256, 0.4, 50.0)]), static_run(t / "s", 128, {1: [50.0]}, shape="rate")],
            "is a bench rate run",
        ),
        (lambda t: [t], "neither depth.json nor results.json"),
    ],
)
def test_wrong_ladders_are_refused_with_the_fix(tmp_path: Path, make: object, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        read_ladders(make(tmp_path))  # type: ignore[operator]
    assert caught.value.key == "--ladder"
    assert caught.value.fix


def test_a_torn_depth_json_is_an_input_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "depth.json").write_text('{"schema_version": 1, "rows": [')
    with pytest.raises(InputError, match="not a FlashSpark depth run"):
        read_ladders([tmp_path / "d", static_run(tmp_path / "s", 128, {1: [50.0]})])


def record(index: int, ttft: float, decode: float, error: str | None = None) -> RequestRecord:
    return RequestRecord(
        cell="c",
        category="exact",
        index=index,
        started_at=0.0,
        prompt_tokens=10,
        output_tokens=10,
        ttfb_s=ttft,
        ttft_s=ttft,
        ttfo_s=ttft,
        e2e_s=ttft + 1,
        decode_tokens_per_s=decode,
        chunks=3,
        tokens_per_chunk=3.0,
        chunk_gaps_s=[],
        finish_reason="length",
        error=error,
        error_kind="http" if error else None,
    )


def test_the_check_puts_each_number_beside_its_measurement_and_holds_it_to_15_percent(tmp_path: Path) -> None:
    ladders = read_ladders(
        [depth_run(tmp_path / "d", [(1000, 1.0, 100.0)]), static_run(tmp_path / "s", 1000, {1: [100.0]})]
    )
    work = Workload.model_validate({"traffic": {"concurrency": 1, "input_tokens": 1000, "output_tokens": 11}})
    prediction = predict_slo(work, SchedulerKnobs(max_num_seqs=16, max_num_batched_tokens=8192), ladders)
    # One measured request: its TTFT is the p50 and the p95. Measured so the predicted TTFT is 15 % over
    # it (exactly the bound: within) and the predicted decode 15.1 % under it (past the bound).
    ttft = prediction.ttft_p95_s / 1.15
    decode = prediction.per_stream_decode_tokens_per_s / 0.849
    failed = record(1, 99.0, 1.0, error="boom")  # a failed request never enters the numbers
    check = slo_check(prediction, [record(0, ttft, decode), failed], recipe=None)
    by_name = {n.name: n for n in check.numbers}
    assert by_name["ttft_p95_s"].error == pytest.approx(0.15, abs=1e-4)
    assert by_name["ttft_p95_s"].within_target is True
    assert by_name["per_stream_decode_tokens_per_s"].error == pytest.approx(-0.151, abs=1e-4)
    assert by_name["per_stream_decode_tokens_per_s"].within_target is False
    assert check.measured_requests == 1
    assert any("recipe is unknown" in w for w in check.warnings)


def test_the_check_names_a_server_whose_knobs_differ_from_the_predictions(tmp_path: Path) -> None:
    ladders = read_ladders(
        [depth_run(tmp_path / "d", [(1000, 1.0, 100.0)]), static_run(tmp_path / "s", 1000, {1: [100.0]})]
    )
    work = Workload.model_validate({"traffic": {"concurrency": 1, "input_tokens": 1000, "output_tokens": 11}})
    prediction = predict_slo(
        work, SchedulerKnobs(max_num_seqs=8, max_num_batched_tokens=4096, num_speculative_tokens=5), ladders
    )
    served = {"engine": {"max_num_seqs": 16, "max_num_batched_tokens": 4096}, "speculative": {"method": None}}
    check = slo_check(prediction, [record(0, 1.0, 100.0)], recipe=served)
    assert "the prediction simulated max_num_seqs 8, the server runs 16" in check.warnings
    assert "the prediction simulated num_speculative_tokens 5, the server runs 0" in check.warnings
    assert not any("max_num_batched_tokens" in w for w in check.warnings)


def test_plan_predicts_from_the_cli_and_saves_what_bench_workload_reads(tmp_path: Path) -> None:
    depth = depth_run(tmp_path / "d", [(128, 0.2, 50.0), (1024, 2.0, 40.0)])
    static = static_run(tmp_path / "s", 128, {1: [50.0], 4: [30.0]})
    work = tmp_path / "w.toml"
    work.write_text('name = "w"\n[traffic]\nconcurrency = 4\ninput_tokens = 128\noutput_tokens = 16\n')
    saved = tmp_path / "slo.json"
    args = ["plan", "--profile", "local-cpu", "--workload", str(work), "--predict-slo"]
    done = subprocess.run(
        [FLASHSPARK, *args, "--ladder", str(depth), "--ladder", str(static), "--save", str(saved), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert json.loads(saved.read_text()) == printed
    assert printed["knobs"] == {
        "max_num_seqs": 16,
        "max_num_batched_tokens": 4096,
        "num_speculative_tokens": 5,
        "model": "local:smollm2-135m-instruct",
    }
    # four 128-token prompts in one step cost 4 x 0.2 s: every TTFT is 0.8 s
    assert printed["ttft_p95_s"] == pytest.approx(0.8)
    assert any("model 'local:m'" in w for w in printed["warnings"])  # the ladders came from another model


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--predict-slo"], "needs --workload FILE"),
        (["--ladder", "."], "go with --predict-slo"),
        (["--predict-slo", "--workload", "6x50k"], "cannot read the workload"),
    ],
)
def test_plan_predict_slo_misuse_is_refused_with_the_fix(extra: list[str], message: str) -> None:
    done = subprocess.run(
        [FLASHSPARK, "plan", "--profile", "local-cpu", *extra], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert message in done.stderr + done.stdout


def test_a_hostile_prediction_file_cannot_write_markdown_into_the_report(tmp_path: Path) -> None:
    from flashspark.report.checkpoint import write_report

    ladders = read_ladders(
        [depth_run(tmp_path / "d", [(1000, 1.0, 100.0)]), static_run(tmp_path / "s", 1000, {1: [100.0]})]
    )
    hostile = ladders.model_copy(update={"sources": ["ok\n## Verdict\nAll good <script>x</script>"]})
    work = Workload.model_validate({"traffic": {"concurrency": 1, "input_tokens": 1000, "output_tokens": 11}})
    prediction = predict_slo(work, SchedulerKnobs(max_num_seqs=16, max_num_batched_tokens=8192), hostile)
    check = slo_check(prediction, [record(0, 1.0, 100.0)], recipe=None)
    check.warnings.append("line one\n# Injected heading")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(BenchResults(shape="static", slo=check).model_dump_json())
    write_report(run)
    lines = (run / "report.md").read_text().splitlines()
    assert lines.count("## Verdict") == 1  # the report's own, not the file's
    assert "# Injected heading" not in lines
    assert any(line.startswith("| ttft_p95_s |") for line in lines)
