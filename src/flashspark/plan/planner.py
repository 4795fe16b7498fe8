"""`flashspark plan`: the KV pool, the concurrency and the speed ceiling, predicted from the recipe.

Reads only the recipe (profile + cluster + model facts) and the caller's
overrides. Every number in the result carries its unit and its source:
`input` (given), `recipe` (from the resolved recipe), `derived` (computed
here) or `assumed` (a documented default the caller can override).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.bootlog import BootEvidence, parse_boot_log
from flashspark.errors import RecipeError
from flashspark.plan.facts import (
    DEEPSEEK_V4_BLOCK_SIZE,
    DEFAULT_CONTEXT_FOR_SPEED,
    DEFAULT_VLLM_VERSION,
    HF_DEFAULT_VLLM_VERSION,
    MAX_GIB,
    VLLM_DEFAULT_BLOCK_SIZE,
    VLLM_DEFAULT_GPU_MEMORY_UTILIZATION,
    VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS,
)
from flashspark.plan.hf_layouts import HFAttentionConfig, attention_layout
from flashspark.plan.layouts import KVLayout, deepseek_v4_layout
from flashspark.plan.sizing import GIB, KVSizing, blocks_from_reported, size_kv
from flashspark.plan.speed import speed_ceiling
from flashspark.plan.workload import fit_workload, parse_workload
from flashspark.recipe.model import EMBEDDED_VLLM, Recipe, SizingFacts

PLAN_SCHEMA_VERSION = 1


class Quantity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    value: float | int | str | None
    unit: str
    source: str  # input | recipe | derived | assumed | boot log
    note: str = ""


class MemoryBudget(BaseModel):
    """available = total x gpu_memory_utilization - weights - activation peak - CUDA-graph estimate."""

    model_config = ConfigDict(extra="forbid")

    total_memory_gib: float = Field(
        default=119.7, ge=0, le=MAX_GIB, description="GB10 visible memory per node [S] 119-121 GiB."
    )
    gpu_memory_utilization: float | None = None
    weights_gib: float = Field(
        default=77.3, ge=0, le=MAX_GIB, description="~166 GB of DSpark weights over 2 ranks [D]."
    )
    activation_peak_gib: float = Field(
        default=3.98,
        ge=0,
        le=MAX_GIB,
        description="Profile-run peak; calibrated so gmu 0.80 gives the 14.48 GiB a 1M boot logged.",
    )
    cudagraph_gib: float = Field(
        default=0.0,
        ge=0,
        le=MAX_GIB,
        description="Subtracted only with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1 (~1.3 GiB).",
    )

    def available_gib(self) -> float:
        gmu = self.gpu_memory_utilization or VLLM_DEFAULT_GPU_MEMORY_UTILIZATION
        return self.total_memory_gib * gmu - self.weights_gib - self.activation_peak_gib - self.cudagraph_gib


class PlanInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    available_kv_gib: float | None = Field(default=None, ge=0, le=MAX_GIB)
    kv_cache_tokens: int | None = Field(default=None, description="A boot's reported pool, to size from instead.")
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    kv_cache_dtype: str | None = None
    dtype: str | None = None
    vllm_version: str | None = Field(
        default=None, description=f"Picks the formula; default: the recipe's [sizing], else {DEFAULT_VLLM_VERSION}."
    )
    logged_vllm_version: str | None = Field(default=None, description="The version a boot log printed.")
    kv_formula: str | None = Field(default=None, description="sum | per_group, overriding any version.")
    in_flight_batches: int | None = Field(default=None, ge=1)
    hf_config: Path | None = None
    platform: str | None = Field(
        default=None, description="cpu | cuda: whose attention kernel sizes sliding blocks (default: the recipe's)."
    )
    recipe_engine: bool = Field(
        default=True,
        description="A --hf-config model takes the recipe's engine settings (False: the caller named no recipe).",
    )
    budget: MemoryBudget = Field(default_factory=MemoryBudget)
    workload: str | None = None
    mean_acceptance_length: float | None = None
    context_for_speed: int = DEFAULT_CONTEXT_FOR_SPEED

    @property
    def sizes_with_recipe_engine(self) -> bool:
        """The recipe's model, or another model whose caller named a recipe: its engine settings apply."""
        return self.hf_config is None or self.recipe_engine


class PlanResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = PLAN_SCHEMA_VERSION
    model: str
    vllm_version: str
    formula: str
    formula_source: str = "assumed"  # input | recipe [sizing] | boot log | assumed
    in_flight_tokens: int = 0
    kv_cache_tokens: int
    max_concurrency: float
    num_blocks: int
    blocks_per_request: int
    available_kv_gib: float
    quantities: list[Quantity]
    layout: dict[str, Any]
    workload: dict[str, Any] | None = None
    sensitivity: list[dict[str, Any]] = Field(default_factory=list)
    advice: list[str] = Field(default_factory=list)
    speed: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None


def is_deepseek_v4(recipe: Recipe) -> bool:
    return "deepseek-v4" in recipe.model.id.lower() or "deepseek_v4" in (recipe.engine.tokenizer_mode or "")


class EngineSettings(BaseModel):
    """The engine settings a layout is sized with, and where each came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    block_size: int | None
    kv_cache_dtype: str
    dtype: str
    max_model_len: int
    max_num_batched_tokens: int
    platform: str
    sources: dict[str, str]


def engine_settings(recipe: Recipe, inputs: PlanInputs, hf: HFAttentionConfig | None = None) -> EngineSettings:
    """Each setting from the input, else the recipe, else vLLM's own default.

    A --hf-config model is another model than the recipe's: it takes the recipe's engine
    settings only when the caller chose that recipe (`recipe_engine`); otherwise the default
    profile's DeepSeek-V4 settings (nvfp4_ds_mla, block 256, 1M context) would size a Llama.
    """
    engine = recipe.engine if inputs.sizes_with_recipe_engine else None
    model_len = hf.max_position_embeddings if hf is not None else None
    fallbacks: dict[str, Any] = {
        "block_size": None,  # the layout's own (16 for full attention, 256 for DeepSeek-V4)
        "kv_cache_dtype": "auto",
        "dtype": "auto",
        "max_model_len": model_len or recipe.model.native_max_model_len,
        "max_num_batched_tokens": VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS,
    }
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, fallback in fallbacks.items():
        given = getattr(inputs, name)
        from_recipe = getattr(engine, name) if engine is not None else None
        if given is not None:
            values[name], sources[name] = given, "input"
        elif from_recipe is not None:
            values[name], sources[name] = from_recipe, "recipe"
        else:
            values[name], sources[name] = fallback, "vLLM default"
    if inputs.platform is not None:
        values["platform"], sources["platform"] = inputs.platform, "input"
    else:
        values["platform"] = "cpu" if recipe.cluster.vllm_bin == EMBEDDED_VLLM else "cuda"
        sources["platform"] = "recipe"
    return EngineSettings(**values, sources=sources)


def build_layout(recipe: Recipe, settings: EngineSettings, hf: HFAttentionConfig | None) -> KVLayout:
    if hf is not None:
        return attention_layout(
            hf,
            block_size=settings.block_size or VLLM_DEFAULT_BLOCK_SIZE,
            kv_cache_dtype=settings.kv_cache_dtype,
            dtype=settings.dtype,
            platform=settings.platform,
        )
    if is_deepseek_v4(recipe):
        return deepseek_v4_layout(
            kv_cache_dtype=settings.kv_cache_dtype, block_size=settings.block_size or DEEPSEEK_V4_BLOCK_SIZE
        )
    raise RecipeError(
        f"no KV model for {recipe.model.id!r}", key="--hf-config", fix="pass the model's config.json with --hf-config"
    )


class SizingChoice(BaseModel):
    version: str
    formula: str | None  # None: the version's own
    in_flight_batches: int | None  # None: the version's own
    source: str


def sizing_choice(recipe: Recipe, inputs: PlanInputs) -> SizingChoice:
    """Which counting to use. An explicit --vllm-version asks "what would that vLLM do" and
    beats the image's recorded facts; those beat the version a boot log prints, because
    forks backport sizing code without changing their version. The facts describe the
    recipe's own model on its image, so a --hf-config model does not take them."""
    facts = recipe.sizing if inputs.hf_config is None else SizingFacts()
    if inputs.vllm_version is not None:
        return SizingChoice(
            version=inputs.vllm_version,
            formula=inputs.kv_formula,
            in_flight_batches=inputs.in_flight_batches,
            source="input",
        )
    # The recipe's default version is its image's; a model sized without a recipe is sized as the
    # upstream vLLM whose boots tests/cases/plan/ records.
    fallback = DEFAULT_VLLM_VERSION if inputs.sizes_with_recipe_engine else HF_DEFAULT_VLLM_VERSION
    version = inputs.logged_vllm_version or fallback
    if facts.kv_formula is not None or facts.in_flight_batches is not None:
        return SizingChoice(
            version=version,
            formula=inputs.kv_formula or facts.kv_formula,
            in_flight_batches=inputs.in_flight_batches or facts.in_flight_batches,
            source="recipe [sizing]",
        )
    return SizingChoice(
        version=version,
        formula=inputs.kv_formula,
        in_flight_batches=inputs.in_flight_batches,
        source="boot log" if inputs.logged_vllm_version else "assumed",
    )


def plan_kv(recipe: Recipe, inputs: PlanInputs) -> PlanResult:
    """The full plan: sizing, workload fit, sensitivity, advice and the speed ceiling."""
    hf = HFAttentionConfig.from_file(inputs.hf_config) if inputs.hf_config is not None else None
    settings = engine_settings(recipe, inputs, hf)
    layout = build_layout(recipe, settings, hf)
    choice = sizing_choice(recipe, inputs)
    version = choice.version
    max_len = settings.max_model_len
    mnbt = settings.max_num_batched_tokens
    q = [
        Quantity(name="max_model_len", value=max_len, unit="tokens", source=settings.sources["max_model_len"]),
        Quantity(
            name="max_num_batched_tokens",
            value=mnbt,
            unit="tokens",
            source=settings.sources["max_num_batched_tokens"],
        ),
        Quantity(
            name="kv_cache_dtype",
            value=layout.kv_cache_dtype,
            unit="",
            source=settings.sources["kv_cache_dtype"],
            note="auto follows the engine dtype" if settings.kv_cache_dtype == "auto" else "",
        ),
        Quantity(name="block_size", value=layout.block_size, unit="tokens", source=settings.sources["block_size"]),
    ]

    budget = inputs.budget.model_copy(
        update={
            "gpu_memory_utilization": recipe.engine.gpu_memory_utilization
            if inputs.budget.gpu_memory_utilization is None
            else inputs.budget.gpu_memory_utilization
        }
    )

    def sized(available_bytes: int, *, length: int = max_len, batched: int = mnbt) -> KVSizing:
        return size_kv(
            layout,
            available_kv_bytes=available_bytes,
            max_model_len=length,
            max_num_batched_tokens=batched,
            vllm_version=version,
            async_scheduling=recipe.engine.async_scheduling,
            pipeline_parallel_size=recipe.parallel.pipeline_parallel_size,
            formula=choice.formula,
            in_flight_batches=choice.in_flight_batches,
        )

    if inputs.kv_cache_tokens is not None:
        blocks = blocks_from_reported(
            layout,
            kv_cache_tokens=inputs.kv_cache_tokens,
            max_model_len=max_len,
            max_num_batched_tokens=mnbt,
            vllm_version=version,
            async_scheduling=recipe.engine.async_scheduling,
            formula=choice.formula,
            in_flight_batches=choice.in_flight_batches,
        )
        available = blocks * layout.bytes_per_block
        q.append(Quantity(name="reported KV cache size", value=inputs.kv_cache_tokens, unit="tokens", source="input"))
    elif inputs.available_kv_gib is not None:
        available = int(inputs.available_kv_gib * GIB)
        q.append(Quantity(name="available KV cache memory", value=inputs.available_kv_gib, unit="GiB", source="input"))
    else:
        available = int(budget.available_gib() * GIB)
        q += [
            Quantity(
                name="total memory", value=budget.total_memory_gib, unit="GiB", source="assumed", note="GB10 per node"
            ),
            Quantity(
                name="gpu_memory_utilization", value=budget.gpu_memory_utilization, unit="fraction", source="recipe"
            ),
            Quantity(name="weights", value=budget.weights_gib, unit="GiB", source="assumed", note="per rank"),
            Quantity(name="activation peak", value=budget.activation_peak_gib, unit="GiB", source="assumed"),
            Quantity(name="CUDA-graph estimate", value=budget.cudagraph_gib, unit="GiB", source="assumed"),
            Quantity(
                name="available KV cache memory", value=round(budget.available_gib(), 3), unit="GiB", source="derived"
            ),
        ]
        if available <= 0:
            raise RecipeError(
                "the memory budget leaves nothing for the KV cache",
                key="--weights-gib",
                fix="check the budget inputs, or pass --available-kv-gib from a boot log",
            )
    result = sized(available)
    q += [
        Quantity(name="bytes per pool block", value=layout.bytes_per_block, unit="B", source="derived"),
        Quantity(name="KV blocks", value=result.num_blocks, unit="blocks", source="derived"),
        Quantity(
            name="blocks charged per request",
            value=result.blocks_per_request,
            unit="blocks",
            source="derived",
            note=f"{result.formula} formula, in-flight {result.in_flight_tokens} tokens (from {choice.source})",
        ),
        Quantity(
            name="raw pool",
            value=result.num_blocks * layout.block_size,
            unit="tokens",
            source="derived",
            note="token positions if every block held context",
        ),
        Quantity(
            name="KV cache size",
            value=result.kv_cache_tokens,
            unit="tokens",
            source="derived",
            note="what vLLM logs: max_concurrency x max_model_len",
        ),
        Quantity(
            name="maximum concurrency",
            value=round(result.max_concurrency, 4),
            unit="x",
            source="derived",
            note=f"requests of {max_len:,} tokens at once",
        ),
    ]
    plan = PlanResult(
        model=layout.model,
        vllm_version=version,
        formula=result.formula,
        formula_source=choice.source,
        in_flight_tokens=result.in_flight_tokens,
        kv_cache_tokens=result.kv_cache_tokens,
        max_concurrency=result.max_concurrency,
        num_blocks=result.num_blocks,
        blocks_per_request=result.blocks_per_request,
        available_kv_gib=available / GIB,
        quantities=q,
        layout=layout.to_dict() | {"pages_per_request": dict(result.group_pages)},
    )
    if inputs.workload:
        fit = fit_workload(
            layout,
            parse_workload(inputs.workload),
            pool_blocks=result.num_blocks,
            max_model_len=max_len,
            max_num_seqs=recipe.engine.max_num_seqs,
            prefill_chunk_tokens=mnbt,
        )
        plan.workload = {
            "spec": inputs.workload,
            "verdict": fit.verdict,
            "live_tokens": fit.live_tokens,
            "requests": fit.requests,
            "admitted": fit.admitted,
            "pool_blocks": fit.pool_blocks,
            "used_blocks": fit.used_blocks,
            "left_blocks": fit.left_blocks,
            "used_share": round(fit.used_share, 4),
            "transient_blocks": fit.transient_blocks,
            "fixed_blocks_per_request": fit.fixed_blocks_per_request,
            "over_max_model_len": fit.over_max_model_len,
            "over_max_num_seqs": fit.over_max_num_seqs,
            "queued_or_preempted": fit.requests - fit.admitted,
        }
    from_budget = inputs.kv_cache_tokens is None and inputs.available_kv_gib is None
    longest = hf.max_position_embeddings if hf is not None and hf.max_position_embeddings else None
    plan.sensitivity = sensitivity(
        sized, available, budget if from_budget else None, max_len, mnbt, longest_context=longest
    )
    plan.advice = advise(plan.sensitivity, mnbt, max_len)
    spec = recipe.speculative
    if is_deepseek_v4(recipe) and inputs.hf_config is None:
        k = (spec.num_speculative_tokens or 0) if spec.enabled else 0
        tau = inputs.mean_acceptance_length or (1 + 0.6 * k if k else 1.0)
        ceiling = speed_ceiling(
            context_tokens=inputs.context_for_speed, num_speculative_tokens=k, mean_acceptance_length=tau
        )
        plan.speed = {
            "tokens_per_s": round(ceiling.tokens_per_s, 1),
            "no_spec_tokens_per_s": round(ceiling.no_spec_tokens_per_s, 1),
            "step_ms": round(ceiling.step_ms, 2),
            "weights_gb_per_step": round(ceiling.weights_gb_per_step, 2),
            "kv_gb_per_step": round(ceiling.kv_gb_per_step, 3),
            "mean_acceptance_length": tau,
            "mean_acceptance_length_source": "input" if inputs.mean_acceptance_length else "assumed (acceptance 0.6)",
            "distinct_experts_per_layer": round(ceiling.distinct_experts_per_layer, 1),
            "context_tokens": ceiling.context_tokens,
            "bandwidth_gb_s": 273.0,
            "assumptions": "single stream, 100 % of 273 GB/s, TP 2 per-rank bytes, independent expert routing",
        }
    return plan


def sensitivity(
    sized: Any,
    available: int,
    budget: MemoryBudget | None,
    max_len: int,
    mnbt: int,
    *,
    longest_context: int | None = None,
) -> list[dict[str, Any]]:
    """KV tokens and concurrency against each knob; gpu_memory_utilization only when sized from the budget,
    and context lengths only up to what the model takes."""
    rows: list[dict[str, Any]] = []
    for batched in (2048, 4096, 8192, 16384):
        r = sized(available, batched=batched)
        rows.append(
            {
                "knob": "max_num_batched_tokens",
                "value": batched,
                "kv_cache_tokens": r.kv_cache_tokens,
                "max_concurrency": round(r.max_concurrency, 3),
            }
        )
    for length in sorted({n for n in (262_144, 524_288, 1_048_576) if n <= (longest_context or n)} | {max_len}):
        r = sized(available, length=length)
        rows.append(
            {
                "knob": "max_model_len",
                "value": length,
                "kv_cache_tokens": r.kv_cache_tokens,
                "max_concurrency": round(r.max_concurrency, 3),
            }
        )
    if budget is not None and budget.gpu_memory_utilization is not None:
        for gmu in (0.75, 0.78, 0.80, 0.85):
            delta = (gmu - budget.gpu_memory_utilization) * budget.total_memory_gib * GIB
            r = sized(max(0, int(available + delta)))
            rows.append(
                {
                    "knob": "gpu_memory_utilization",
                    "value": gmu,
                    "kv_cache_tokens": r.kv_cache_tokens,
                    "max_concurrency": round(r.max_concurrency, 3),
                }
            )
    return rows


def advise(rows: list[dict[str, Any]], mnbt: int, max_len: int) -> list[str]:
    by_mnbt = {r["value"]: r for r in rows if r["knob"] == "max_num_batched_tokens"}
    advice = []
    current = by_mnbt.get(mnbt)
    smaller = by_mnbt.get(mnbt // 2)
    if current and smaller and current["kv_cache_tokens"]:
        gain = smaller["kv_cache_tokens"] / current["kv_cache_tokens"] - 1
        advice.append(
            f"max_num_batched_tokens {mnbt // 2} instead of {mnbt} reports {gain:+.0%} KV cache "
            f"({smaller['kv_cache_tokens']:,} tokens, {smaller['max_concurrency']}x): every request is charged "
            "window and compressor state for one prefill chunk, so smaller chunks buy pool; the cost is "
            f"twice as many prefill steps for long prompts (slower TTFT beyond {mnbt // 2} tokens)."
        )
    advice.append(
        f"The pool is shared: max_num_seqs and max_model_len ({max_len:,}) are ceilings, not reservations; "
        "check a mix of live requests with --workload."
    )
    return advice


def calibrate(recipe: Recipe, log_path: Path, inputs: PlanInputs) -> PlanResult:
    """Predict from a boot log's available KV memory and configuration; compare with what it logged."""
    try:
        boot = parse_boot_log(log_path.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise RecipeError(f"cannot read boot log {log_path}", where=str(log_path), fix="check the path") from exc
    if boot.available_kv_cache_gib is None:
        raise RecipeError(
            f"{log_path} has no 'Available KV cache memory' line",
            where=str(log_path),
            fix="pass --available-kv-gib with the value from another log",
        )
    updates = _inputs_from_args(boot, inputs)
    plan = plan_kv(recipe, inputs.model_copy(update=updates))
    plan.calibration = comparison(boot, plan)
    return plan


def _inputs_from_args(boot: BootEvidence, inputs: PlanInputs) -> dict[str, Any]:
    args = boot.args
    updates: dict[str, Any] = {"available_kv_gib": boot.available_kv_cache_gib, "kv_cache_tokens": None}
    if boot.vllm_version:
        updates["logged_vllm_version"] = boot.vllm_version
    for key in ("max_model_len", "max_num_batched_tokens", "block_size", "kv_cache_dtype", "dtype"):
        if getattr(inputs, key) is None and args.get(key) is not None:
            updates[key] = args[key]
    if boot.max_concurrency_for_tokens and updates.get("max_model_len") is None and inputs.max_model_len is None:
        updates["max_model_len"] = boot.max_concurrency_for_tokens
    return updates


def comparison(boot: BootEvidence, plan: PlanResult) -> dict[str, Any]:
    def error(predicted: float, logged: float | None) -> float | None:
        return None if not logged else round((predicted / logged - 1) * 100, 3)

    return {
        "logged_kv_cache_tokens": boot.kv_cache_tokens,
        "predicted_kv_cache_tokens": plan.kv_cache_tokens,
        "kv_cache_tokens_error_pct": error(plan.kv_cache_tokens, boot.kv_cache_tokens),
        "logged_max_concurrency": boot.max_concurrency,
        "predicted_max_concurrency": round(plan.max_concurrency, 4),
        "max_concurrency_error_pct": error(plan.max_concurrency, boot.max_concurrency),
        "available_kv_cache_gib": boot.available_kv_cache_gib,
        "vllm_version_logged": boot.vllm_version,
        "args_used": {
            k: v
            for k, v in boot.args.items()
            if k in {"max_model_len", "max_num_batched_tokens", "block_size", "kv_cache_dtype", "dtype"}
        },
    }
