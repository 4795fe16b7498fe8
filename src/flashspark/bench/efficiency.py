"""Decode against the memory roofline, and the draft length each concurrency should use.

The roofline: a decode step reads the weights once for the whole batch and each stream's KV
cache, so at concurrency c with τ tokens per step (the mean acceptance length) no deployment
decodes faster than c·τ·bandwidth / (weights + c·context·KV per token). For the DeepSeek-V4
profiles the bytes are the planner's (plan/speed.py: per-rank weights of the distinct experts a
step's c·(k+1) tokens pick, DGX Spark's 273 GB/s); for a model served on this machine (the
embedded default) the weights are the served checkpoint's parameters at the serving dtype, the
KV bytes come from its config.json, and the bandwidth is measured here (`memory_bandwidth`: a
large array copy, bytes read plus bytes written over the best of five). Both are ceilings, not
forecasts: they ignore compute, which bounds a CPU long before its memory does.

The recommended k: each cell's per-position acceptance says how many tokens a shorter draft
would still yield per step (1 + Σ of the first k' positions' rates); the cells' step times
(τ over the per-stream decode rate) fitted as t = t0 + b·n over the batch's tokens n = c·(1+k)
say what it would cost. The best k' maximises tokens per second. A draft model's own cost per
position is not in the fit (n-gram drafting has none); say so when it is not n-gram.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.bench.stats import CellSummary
from flashspark.errors import RecipeError
from flashspark.plan.hf_layouts import HFAttentionConfig
from flashspark.plan.planner import is_deepseek_v4
from flashspark.plan.speed import SpeedAssumptions, kv_read_gb, step_weights_gb
from flashspark.recipe import Recipe

ROOFLINE_SCHEMA_VERSION = 1
GB = 1e9
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "fp8": 1}
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1}
COPY_BYTES = 128 * 1024 * 1024
COPY_REPEATS = 5
MAX_HEADER_BYTES = 100 * 1024 * 1024  # a safetensors header past this is not one


class Roofline(BaseModel):
    """What one decode step must read, and how fast this hardware reads it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = ROOFLINE_SCHEMA_VERSION
    bandwidth_gb_s: float = Field(gt=0)
    bandwidth_source: str
    weights_gb: dict[int, float] = Field(description="Weight GB one step reads, by concurrency (MoE: grows with it).")
    kv_gb_fixed: float = Field(default=0.0, ge=0)
    kv_gb_per_context_token: float = Field(ge=0)
    bytes_source: str
    draft: str = Field(description="The drafting method (its own cost is outside the k recommendation's fit).")

    def ceiling(self, concurrency: int, tokens_per_step: float, context_tokens: float) -> float | None:
        """Aggregate decode tokens/s no deployment beats at this concurrency, τ and context."""
        weights = self.weights_gb.get(concurrency)
        if weights is None:
            return None
        step_gb = weights + concurrency * (self.kv_gb_fixed + context_tokens * self.kv_gb_per_context_token)
        if step_gb <= 0:  # a step that reads nothing has no ceiling (only a hand-made file says so)
            return None
        return concurrency * tokens_per_step * self.bandwidth_gb_s / step_gb


def memory_bandwidth() -> float:
    """GB/s of a large array copy on this machine (read + write bytes, best of COPY_REPEATS)."""
    import numpy as np

    source = np.ones(COPY_BYTES // 8, dtype=np.float64)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(COPY_REPEATS):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return round(2 * COPY_BYTES / best / GB, 1)


def checkpoint_parameters(model_dir: Path) -> int:
    """Parameters in a folder's *.safetensors, from each file's header (no tensor is read)."""
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        try:
            with path.open("rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > MAX_HEADER_BYTES:
                    raise ValueError(f"a header of {length:,} bytes")
                header = json.loads(handle.read(length))
            for name, tensor in header.items():
                if name != "__metadata__":
                    count = 1
                    for size in tensor["shape"]:
                        count *= int(size)
                    total += count
        except (struct.error, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RecipeError(
                f"{path} has no safetensors header ({exc})", where=str(path), fix="rebuild the model"
            ) from None
    return total


def roofline_for(recipe: Recipe, boot: dict[str, Any] | None, levels: list[int]) -> tuple[Roofline | None, str]:
    """The roofline of what this run measures, or None and why not."""
    spec = recipe.speculative
    k = (spec.num_speculative_tokens or 0) if spec.enabled else 0
    draft = spec.method if spec.enabled else "none"
    if is_deepseek_v4(recipe):
        a = SpeedAssumptions()
        per_token = kv_read_gb(1, a) - kv_read_gb(0, a)
        return (
            Roofline(
                bandwidth_gb_s=a.bandwidth_gb_s,
                bandwidth_source="DGX Spark LPDDR5x, the planner's figure (plan/speed.py)",
                weights_gb={c: round(step_weights_gb(c * (k + 1), k > 0, a), 4) for c in levels},
                kv_gb_fixed=kv_read_gb(0, a),
                kv_gb_per_context_token=per_token,
                bytes_source="the planner's per-rank bytes per step for DeepSeek-V4 (TP 2, independent routing)",
                draft=draft,
            ),
            "",
        )
    args = ((boot or {}).get("evidence") or {}).get("args") or {}
    model_dir = Path(str(args.get("model") or ""))
    if not args.get("model") or not (model_dir / "config.json").is_file():
        return None, "the served checkpoint is not on this machine (the roofline needs its size and this bandwidth)"
    dtype = str(args.get("dtype") or recipe.engine.dtype or "")
    config = HFAttentionConfig.from_file(model_dir / "config.json")
    width = DTYPE_BYTES.get(dtype) or DTYPE_BYTES.get(config.torch_dtype)
    if width is None:
        return None, f"serving dtype {dtype or config.torch_dtype!r} has no known width"
    parameters = checkpoint_parameters(model_dir)
    if parameters == 0:
        return None, f"no *.safetensors in {model_dir}"
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * width / GB
    return (
        Roofline(
            bandwidth_gb_s=memory_bandwidth(),
            bandwidth_source=f"measured here: a {COPY_BYTES >> 20} MiB array copy, best of {COPY_REPEATS}",
            weights_gb={c: round(parameters * width / GB, 4) for c in levels},
            kv_gb_per_context_token=kv_per_token,
            bytes_source=f"{parameters:,} parameters at {width} bytes ({dtype or config.torch_dtype}); KV from "
            f"config.json ({config.num_hidden_layers} layers x {config.num_key_value_heads} KV heads x "
            f"{config.head_dim}, full attention)",
            draft=draft,
        ),
        "",
    )


# --- per cell ------------------------------------------------------------------------------------


class CellEfficiency(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cell: str
    concurrency: int
    tokens_per_step: float
    context_tokens: float
    decode_tokens_per_s: float
    ceiling_tokens_per_s: float
    efficiency: float


def concurrency_of(cell: CellSummary) -> int:
    return cell.level or cell.concurrency_cap or cell.requests or 1


def cell_efficiency(cell: CellSummary, roofline: Roofline) -> CellEfficiency | None:
    """A cell's decode (streams x per-stream rate) over its roofline; None when the cell lacks a number."""
    if cell.per_stream_decode_tokens_per_s_mean is None or cell.completed == 0:
        return None
    c = concurrency_of(cell)
    tau = cell.spec_decode_acceptance_length or 1.0
    # The mean context a decode step reads: the prompt plus half the reply.
    context = (cell.total_input_tokens + cell.total_output_tokens / 2) / cell.completed
    ceiling = roofline.ceiling(c, tau, context)
    if ceiling is None or ceiling <= 0:
        return None
    decode = c * cell.per_stream_decode_tokens_per_s_mean
    return CellEfficiency(
        cell=cell.cell,
        concurrency=c,
        tokens_per_step=round(tau, 3),
        context_tokens=round(context, 1),
        decode_tokens_per_s=round(decode, 2),
        ceiling_tokens_per_s=round(ceiling, 1),
        efficiency=round(decode / ceiling, 4),
    )


# --- the draft length -----------------------------------------------------------------------------


class DraftAdvice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int
    measured_k: int
    recommended_k: int
    tokens_per_step: dict[int, float] = Field(description="Expected tokens per step for each k up to the measured one.")
    speedup: float = Field(description="Predicted decode speed at the recommended k over the measured k.")


class DraftFit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step_fixed_ms: float
    step_per_token_ms: float
    cells: int
    advice: list[DraftAdvice]
    note: str


def _fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares t = t0 + b·n; b held at 0 or more (a noisy run never makes tokens free), t0 at 0 or more."""
    if len({n for n, _ in points}) < 2:
        return None
    mean_n = sum(n for n, _ in points) / len(points)
    mean_t = sum(t for _, t in points) / len(points)
    spread = sum((n - mean_n) ** 2 for n, _ in points)
    slope = max(0.0, sum((n - mean_n) * (t - mean_t) for n, t in points) / spread)
    return max(0.0, mean_t - slope * mean_n), slope


def recommend_k(cells: list[CellSummary], draft: str) -> tuple[DraftFit | None, str]:
    """The draft length that maximises tokens/s at each measured concurrency, or None and why not."""
    usable = [
        c
        for c in cells
        if c.spec_decode_per_position_acceptance_rates
        and c.spec_decode_acceptance_length
        and c.per_stream_decode_tokens_per_s_mean
    ]
    if not usable:
        return None, "no cell has per-position acceptance and a decode rate (is speculative decoding on?)"
    k = len(usable[0].spec_decode_per_position_acceptance_rates)
    points: list[tuple[float, float]] = []
    for c in usable:
        step_s = (c.spec_decode_acceptance_length or 1.0) / (c.per_stream_decode_tokens_per_s_mean or 1.0)
        points.append((concurrency_of(c) * (1 + k), step_s))
    fitted = _fit(points)
    if fitted is None:
        return None, "one concurrency only: the step-time fit needs cells at two or more"
    t0, b = fitted
    advice = []
    for level in sorted({concurrency_of(c) for c in usable}):
        at_level = [c.spec_decode_per_position_acceptance_rates for c in usable if concurrency_of(c) == level]
        rates = [sum(r[i] for r in at_level) / len(at_level) for i in range(k)]
        expected = {j: 1 + sum(rates[:j]) for j in range(k + 1)}
        speed = {j: expected[j] / (t0 + b * level * (1 + j)) for j in expected if t0 + b * level * (1 + j) > 0}
        if not speed:
            continue
        best = max(speed, key=lambda j: speed[j])
        advice.append(
            DraftAdvice(
                concurrency=level,
                measured_k=k,
                recommended_k=best,
                tokens_per_step={j: round(v, 3) for j, v in expected.items()},
                speedup=round(speed[best] / speed[k], 3) if k in speed else 1.0,
            )
        )
    note = (
        "step time fitted over the batch's tokens (decode only); n-gram drafting costs nothing per position"
        if draft == "ngram"
        else f"step time fitted over the batch's tokens (decode only); the {draft} draft's own cost per "
        "position is not in the fit, so a longer k is favoured more than it should be"
    )
    return (
        DraftFit(
            step_fixed_ms=round(t0 * 1000, 3),
            step_per_token_ms=round(b * 1000, 4),
            cells=len(usable),
            advice=advice,
            note=note,
        ),
        "",
    )
