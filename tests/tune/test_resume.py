"""A tune survives an interruption: what finished is read back, not measured again; what was cut short is
measured again with its partial evidence kept aside; another workload cannot be resumed into the folder.

The measurement here is a stand-in (it injects the interruption at an exact point); the real engine runs
the whole tune, restarts and all, in tests/engine/test_tune_engine.py.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

from flashspark.cluster.events import Events
from flashspark.errors import InputError
from flashspark.recipe import resolve_recipe
from flashspark.recipe.model import Recipe
from flashspark.recipe.workload import Workload
from flashspark.report import write_run_report
from flashspark.tune.candidates import Candidate
from flashspark.tune.measure import CandidateResult, RoundMetrics
from flashspark.tune.session import run_tune

pytestmark = pytest.mark.engine  # provisioning reads the installed engine and the built model

# Throughput each candidate "measures": k3 leads the recipe (k5) by far more than the spread.
THROUGHPUT = {"k5": 100.0, "k1": 50.0, "k3": 150.0}
WORKLOAD = Workload.model_validate({"name": "w", "search": {"num_speculative_tokens": [1, 3, 5]}})


class Quiet:
    def phase(self, name: str, status: str, detail: str = "") -> None: ...
    def log_line(self, node: str, line: str) -> None: ...
    def note(self, text: str) -> None: ...


def resolve(extra: Sequence[str]) -> Recipe:
    return resolve_recipe(profile="local-cpu", sets=extra).recipe


class StandInMeasure:
    """Records which candidates it was asked for; leaves a partial file, then stops at `interrupt_at`."""

    def __init__(self, interrupt_at: str | None = None) -> None:
        self.asked: list[str] = []
        self.interrupt_at = interrupt_at

    async def __call__(
        self, candidate: Candidate, recipe: Recipe, workload: Workload, folder: Path, events: Events
    ) -> CandidateResult:
        self.asked.append(candidate.id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "partial.txt").write_text(f"k={recipe.speculative.num_speculative_tokens}")
        if candidate.id == self.interrupt_at:
            raise KeyboardInterrupt
        value = THROUGHPUT[candidate.id]
        rounds = [
            RoundMetrics(
                round=r,
                cell=f"r{r}",
                requests=4,
                failed=0,
                output_tokens_per_s=value + r,
                per_stream_decode_tokens_per_s=value / 4,
                p95_ttft_s=1.0,
            )
            for r in range(3)
        ]
        return CandidateResult(candidate=candidate, status="measured", rounds=rounds, evidence=str(folder))


async def test_an_interrupted_tune_resumes_where_it_stopped(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    first = StandInMeasure(interrupt_at="k3")
    with pytest.raises(KeyboardInterrupt):
        await run_tune(WORKLOAD, resolve, out, events=Quiet(), measure_one=first)
    assert first.asked == ["k5", "k1", "k3"]
    left = json.loads((out / "tune.json").read_text())
    assert (left["active"], left["complete"], [r["candidate"]["id"] for r in left["results"]]) == (
        "k3",
        False,
        ["k5", "k1"],
    )
    kept = (out / "candidates" / "k1" / "result.json").read_bytes()

    second = StandInMeasure()
    state = await run_tune(WORKLOAD, resolve, out, events=Quiet(), measure_one=second)
    assert second.asked == ["k3"]  # the finished two are read back
    assert state.resumed == ["k5", "k1"]
    assert (out / "candidates" / "k1" / "result.json").read_bytes() == kept
    assert (out / "candidates" / "k3.interrupted" / "partial.txt").read_text() == "k=3"  # kept aside
    assert state.complete and state.active is None
    assert state.verdict is not None and (state.verdict.best, state.verdict.beats_baseline) == ("k3", True)
    overlay = tomllib.loads((out / "recommended.toml").read_text())
    assert overlay == {"profile": {"name": "local-cpu"}, "speculative": {"num_speculative_tokens": 3}}
    written = write_run_report(out)  # `flashspark report TUNE_DIR` finds the tune by its tune.json
    assert written == [out / "report.md", out / "pareto.png"]
    report = (out / "report.md").read_text()
    assert "k3 beats the recipe's settings on output_tokens_per_s by 50, more than the spread 2" in report
    assert "| k5 (recipe) | measure | 23,296 / – | 101.0 (100.0–102.0) |" in report


async def test_a_result_for_other_settings_is_measured_again(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    await run_tune(WORKLOAD, resolve, out, events=Quiet(), measure_one=StandInMeasure())
    path = out / "candidates" / "k1" / "result.json"
    edited = json.loads(path.read_text())
    edited["candidate"]["settings"]["num_speculative_tokens"] = 2
    path.write_text(json.dumps(edited))
    again = StandInMeasure()
    await run_tune(WORKLOAD, resolve, out, events=Quiet(), measure_one=again)
    assert again.asked == ["k1"]


async def test_another_workload_is_not_resumed_into_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "tune"
    await run_tune(WORKLOAD, resolve, out, events=Quiet(), dry_run=True)
    other = WORKLOAD.model_copy(update={"name": "other"})
    with pytest.raises(InputError, match="another workload or base recipe") as caught:
        await run_tune(other, resolve, out, events=Quiet(), measure_one=StandInMeasure())
    assert caught.value.fix and "--out" in caught.value.fix

    def other_recipe(extra: Sequence[str]) -> Recipe:
        return resolve(("MAX_MODEL_LEN=4096", *extra))

    with pytest.raises(InputError, match="another workload or base recipe"):
        await run_tune(WORKLOAD, other_recipe, out, events=Quiet(), measure_one=StandInMeasure())


async def test_a_dry_run_screens_and_boots_nothing(tmp_path: Path) -> None:
    measure = StandInMeasure()
    state = await run_tune(WORKLOAD, resolve, tmp_path / "t", events=Quiet(), dry_run=True, measure_one=measure)
    assert measure.asked == []
    assert [s.candidate.id for s in state.screened] == ["k5", "k1", "k3"]
    assert all(s.predicted_kv_cache_tokens == 23_296 for s in state.screened)
    assert not state.complete and not (tmp_path / "t" / "recommended.toml").exists()


async def test_the_baseline_is_measured_even_when_the_screen_would_drop_it(tmp_path: Path) -> None:
    # 23 live requests of 1,024 tokens overflow the pool at the recipe's max_num_seqs (16 live: fits);
    # with max_num_seqs 32 they would not: the recipe at 32 is still measured, as the yardstick.
    workload = Workload.model_validate(
        {"traffic": {"concurrency": 23, "input_tokens": 960, "output_tokens": 64}, "search": {"max_num_seqs": [8]}}
    )

    def wide(extra: Sequence[str]) -> Recipe:
        return resolve(("MAX_NUM_SEQS=32", *extra))

    state = await run_tune(workload, wide, tmp_path / "t", events=Quiet(), dry_run=True)
    base = state.screened[0]
    assert base.candidate.baseline and base.verdict == "measure"
    assert "cannot hold 23 live requests" in base.reasons[0] and "measured anyway" in base.reasons[1]


async def test_no_secret_reaches_the_tune_folder(tmp_path: Path) -> None:
    secret = "sk-tune-secret-0123456789abcdef"

    def keyed(extra: Sequence[str]) -> Recipe:
        return resolve((f"VLLM_API_KEY={secret}", "env.runtime.HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz0123", *extra))

    out = tmp_path / "t"
    await run_tune(WORKLOAD, keyed, out, events=Quiet(), measure_one=StandInMeasure())
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert secret not in text and "hf_abcdefghijklmnopqrstuvwxyz0123" not in text, path


async def test_a_folder_holding_something_else_is_refused_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "tune.json").write_text('{"x": 1}')
    with pytest.raises(InputError, match=r"not a tune.json FlashSpark can read \(workload: Field required\)"):
        await run_tune(WORKLOAD, resolve, tmp_path, events=Quiet(), dry_run=True)
