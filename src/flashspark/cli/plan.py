"""`flashspark plan`: the KV pool, the concurrency, the workload fit and the decode ceiling, before a boot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flashspark.cli import console
from flashspark.cli.common import (
    deployment_recipe,
    finish,
    handle_errors,
    json_option,
    load_recipe,
    recipe_options,
)
from flashspark.cli.console import escape
from flashspark.errors import InputError
from flashspark.plan.facts import DEFAULT_CONTEXT_FOR_SPEED, MAX_GIB

# Memory sizes in GiB: a mebi-GiB (1 PiB) is far past any machine, and past ~1e300 the byte count is infinite.
GIB_RANGE = click.FloatRange(min=0, max=MAX_GIB)

if TYPE_CHECKING:
    from flashspark.plan.planner import PlanResult
    from flashspark.plan.slo import SloPrediction
    from flashspark.recipe.model import Recipe


@click.command("plan")
@recipe_options
@click.option("--available-kv-gib", type=GIB_RANGE, default=None, help="Size from this 'Available KV cache memory'.")
@click.option(
    "--kv-cache-tokens", type=click.IntRange(min=1), default=None, help="Size from a boot's reported 'KV cache size'."
)
@click.option("--max-model-len", type=click.IntRange(min=1), default=None)
@click.option("--max-num-batched-tokens", type=click.IntRange(min=1), default=None)
@click.option("--block-size", type=click.IntRange(min=1), default=None)
@click.option("--kv-cache-dtype", default=None, help="auto, fp8, nvfp4_ds_mla, bfloat16, float32, ...")
@click.option("--dtype", default=None, help="Engine dtype for --hf-config models (auto follows the checkpoint).")
@click.option(
    "--platform",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Whose attention kernel sets sliding-window blocks (default: cpu for the embedded engine, else cuda).",
)
@click.option(
    "--vllm-version",
    default=None,
    help="Size as this upstream vLLM would: <= 0.26 or >= 0.32 (default: the profile's [sizing], else 0.21).",
)
@click.option(
    "--kv-formula",
    type=click.Choice(["sum", "per_group"]),
    default=None,
    help="Override the blocks-per-request counting (sum: <= 0.26; per_group: >= 0.32).",
)
@click.option(
    "--in-flight-batches", type=click.IntRange(min=1), default=None, help="Prefill chunks charged per request."
)
@click.option(
    "--hf-config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A Hugging Face config.json (full, sliding-window or hybrid attention) instead of DeepSeek-V4.",
)
@click.option(
    "--boot-log",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Calibrate: predict from this vLLM boot log and compare with what it logged.",
)
@click.option(
    "--workload",
    default=None,
    help="Live requests to fit, e.g. 6x50k,2x1M (or @FILE); with --predict-slo, a workload TOML file.",
)
@click.option(
    "--predict-slo",
    is_flag=True,
    help="Predict p50/p95 TTFT and per-stream decode of the --workload file's traffic from measured --ladder runs.",
)
@click.option(
    "--ladder",
    "ladders",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="With --predict-slo: a `bench depth` run and a `bench static` run of this deployment (give both).",
)
@click.option(
    "--save",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --predict-slo: write the prediction here (JSON) for `bench workload --predicted`.",
)
@click.option("--total-memory-gib", type=GIB_RANGE, default=None)
@click.option("--weights-gib", type=GIB_RANGE, default=None)
@click.option("--activation-gib", type=GIB_RANGE, default=None)
@click.option("--cudagraph-gib", type=GIB_RANGE, default=None)
@click.option(
    "--acceptance-length",
    type=click.FloatRange(min=1),
    default=None,
    help="Mean acceptance length for the speed ceiling.",
)
@click.option(
    "--context",
    "context_tokens",
    type=click.IntRange(min=1),
    default=DEFAULT_CONTEXT_FOR_SPEED,
    show_default=True,
    help="Context length for the speed ceiling's KV reads.",
)
@json_option
@handle_errors
def plan_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    boot_log: Path | None,
    total_memory_gib: float | None,
    weights_gib: float | None,
    activation_gib: float | None,
    cudagraph_gib: float | None,
    acceptance_length: float | None,
    context_tokens: int,
    predict_slo: bool,
    ladders: tuple[Path, ...],
    save: Path | None,
    as_json: bool,
    **given: Any,
) -> None:
    """Predict the KV pool, the maximum concurrency and the decode speed ceiling before a boot.

    \b
    Sizes from --available-kv-gib, --kv-cache-tokens, a --boot-log, or the memory
    budget (total x gpu_memory_utilization - weights - activation peak - CUDA graphs).
    Every number is labelled input, recipe, derived or assumed.
    """
    from flashspark.plan.planner import MemoryBudget, PlanInputs, calibrate, plan_kv

    if predict_slo:
        # The prediction is for the deployment the ladders were measured on: the same recipe `bench`
        # resolves (the cluster file's, else the embedded default's), not plan's default profile.
        slo_command(deployment_recipe(config, profile, sets).recipe, given.get("workload"), ladders, save, as_json)
        return
    recipe = load_recipe(config, profile, sets, strict=False).recipe
    if ladders or save:
        raise InputError("--ladder and --save go with --predict-slo", key="--predict-slo", fix="add --predict-slo")
    budget = {
        "total_memory_gib": total_memory_gib,
        "weights_gib": weights_gib,
        "activation_peak_gib": activation_gib,
        "cudagraph_gib": cudagraph_gib,
    }
    inputs = PlanInputs(
        **{k: v for k, v in given.items() if v is not None},
        budget=MemoryBudget(**{k: v for k, v in budget.items() if v is not None}),
        mean_acceptance_length=acceptance_length,
        context_for_speed=context_tokens,
        # Sizing another model (--hf-config) takes a recipe's engine settings only when one was named.
        recipe_engine=profile is not None or config is not None or bool(sets),
    )
    result = calibrate(recipe, boot_log, inputs) if boot_log else plan_kv(recipe, inputs)
    finish(result, as_json, lambda: print_plan_result(result))


def slo_command(
    recipe: Recipe, workload: str | None, ladders: tuple[Path, ...], save: Path | None, as_json: bool
) -> None:
    from flashspark.bench.ladders import predict_from_runs
    from flashspark.files import write_json
    from flashspark.recipe.workload import load_workload

    if workload is None:
        raise InputError("--predict-slo needs --workload FILE (a workload TOML)", key="--workload")
    prediction = predict_from_runs(recipe, load_workload(Path(workload)), list(ladders))
    if save is not None:
        write_json(save, prediction.model_dump(mode="json"))
    finish(prediction, as_json, lambda: print_prediction(prediction, save))


def print_prediction(p: SloPrediction, save: Path | None) -> None:
    t = p.workload.traffic
    shape = f"{t.concurrency} at once" if t.shape == "static" else f"{t.rate:g}/s Poisson, {t.concurrency} in flight"
    table = console.table(
        title=f"SLO prediction: {escape(p.workload.name)} ({p.requests} requests, {shape}, "
        f"{t.input_tokens:,} in / {t.output_tokens:,} out; max_num_seqs {p.knobs.max_num_seqs}, "
        f"max_num_batched_tokens {p.knobs.max_num_batched_tokens:,}, k {p.knobs.num_speculative_tokens})"
    )
    for column in ("number", "predicted"):
        table.add_column(column)
    table.add_row("TTFT p50 s", f"{p.ttft_p50_s:,.3f}")
    table.add_row("TTFT p95 s", f"{p.ttft_p95_s:,.3f}")
    table.add_row("per-stream decode tok/s", f"{p.per_stream_decode_tokens_per_s:,.2f}")
    table.add_row("aggregate output tok/s", f"{p.output_tokens_per_s:,.2f}")
    parts = p.ttft_parts
    table.add_row("mean TTFT: waiting for a slot s", f"{parts.waiting_for_a_slot_s:,.3f}")
    table.add_row("mean TTFT: own prefill s", f"{parts.own_prefill_s:,.3f}")
    table.add_row("mean TTFT: behind other prompts s", f"{parts.behind_others_s:,.3f}")
    console.out.print(table)
    for warning in p.warnings:
        console.print_plain(f"warning: {escape(warning)}")
    if save is not None:
        console.print_plain(f"saved: {save}\nmeasure it: flashspark bench workload --workload FILE --predicted {save}")


def print_plan_result(result: PlanResult) -> None:
    title = f"KV plan: {result.model}, {result.formula} formula ({result.formula_source}; vLLM {result.vllm_version})"
    table = console.table(title=title)
    for column in ("quantity", "value", "unit", "source", "note"):
        table.add_column(column)
    for q in result.quantities:
        value = f"{q.value:,}" if isinstance(q.value, int) else str(q.value)
        table.add_row(q.name, value, q.unit, q.source, escape(q.note))
    console.out.print(table)
    if result.calibration:
        c = result.calibration
        console.out.print(
            f"[bold]calibration[/]: logged {c['logged_kv_cache_tokens']:,} tokens / {c['logged_max_concurrency']}x;"
            f" predicted {c['predicted_kv_cache_tokens']:,} / {c['predicted_max_concurrency']}x "
            f"(error {c['kv_cache_tokens_error_pct']} % / {c['max_concurrency_error_pct']} %)"
        )
    if result.workload:
        w = result.workload
        console.out.print(
            f"[bold]workload {w['spec']}[/]: {w['verdict']} — {w['live_tokens']:,} live tokens in "
            f"{w['requests']} requests use {w['used_blocks']:,} of {w['pool_blocks']:,} blocks "
            f"({w['used_share']:.0%}, incl. {w['transient_blocks']:,} for one prefill chunk and "
            f"{w['fixed_blocks_per_request']} fixed per request); {w['queued_or_preempted']} would queue "
            f"or be preempted" + (f"; {w['over_max_num_seqs']} over max_num_seqs" if w["over_max_num_seqs"] else "")
        )
    sens = console.table(title="sensitivity")
    for column in ("knob", "value", "KV cache tokens", "max concurrency"):
        sens.add_column(column)
    for row in result.sensitivity:
        sens.add_row(
            row["knob"],
            f"{row['value']:,}" if isinstance(row["value"], int) else str(row["value"]),
            f"{row['kv_cache_tokens']:,}",
            str(row["max_concurrency"]),
        )
    console.out.print(sens)
    for line in result.advice:
        console.out.print(f"advice: {escape(line)}")
    if result.speed:
        s = result.speed
        console.out.print(
            f"[bold]speed ceiling[/]: {s['tokens_per_s']} tok/s single stream at {s['context_tokens']:,} context "
            f"(tau {s['mean_acceptance_length']}, {s['mean_acceptance_length_source']}; step "
            f"{s['step_ms']} ms reading {s['weights_gb_per_step']} GB weights + {s['kv_gb_per_step']} GB KV); "
            f"without drafting {s['no_spec_tokens_per_s']} tok/s. {s['assumptions']}."
        )
