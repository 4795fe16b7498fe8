"""`flashspark validate`: readiness -> smoke -> sanity -> tools -> longdecode -> correctness -> speculative.

Every gate runs against any base URL. The result is `validation.json` in a run
directory: a versioned document with each gate's status and report, the
resolved recipe when one is known, and the pin set (vLLM version, model,
image digest when known), so the verdict can be traced to what produced it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flashspark.client import OpenAIClient
from flashspark.errors import ClientError, InputError
from flashspark.files import write_json
from flashspark.gates.correctness import default_floor, run_correctness
from flashspark.gates.longdecode import run_longdecode
from flashspark.gates.options import GATES, SANITY
from flashspark.gates.sanity import DEFAULT_LEVELS, run_sanity
from flashspark.gates.smoke import DEFAULT_EXPECT, run_smoke
from flashspark.gates.speculative import run_speculative_gate
from flashspark.gates.tools import run_tools
from flashspark.pins import Pins
from flashspark.recipe.model import TOOL_CASES, GateSettings, Recipe

VALIDATION_SCHEMA_VERSION = 1


class GateResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    status: str  # pass | fail | skip | error
    summary: str
    duration_s: float
    report: dict[str, Any] = Field(default_factory=dict)


class ValidationResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = VALIDATION_SCHEMA_VERSION
    ok: bool
    created_at: str
    base_url: str
    model: str | None
    pins: Pins
    gates: list[GateResult]
    recipe: dict[str, Any] | None


class ValidateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    gates: tuple[str, ...] = GATES
    expect: str = DEFAULT_EXPECT
    smoke_concurrency: int = 4
    sanity_levels: tuple[int, ...] = DEFAULT_LEVELS
    sanity_max_tokens: int = SANITY.max_tokens
    strict_cjk: bool = False
    acceptance_floor: float | None = None
    num_speculative_tokens: int | None = None
    speculative_expected: bool = True
    tools_expected: tuple[str, ...] = TOOL_CASES
    longdecode_tokens: int = GateSettings().longdecode_tokens
    longdecode_concurrency: int = 1
    longdecode_window_tokens: int = GateSettings().longdecode_window_tokens


def select_gates(only: tuple[str, ...], skip: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [g for g in (*only, *skip) if g not in GATES]
    if unknown:
        raise InputError(
            f"unknown gate(s) {unknown}", key="--only/--skip", value=unknown, fix=f"the gates are {', '.join(GATES)}"
        )
    chosen = only or GATES
    return tuple(g for g in GATES if g in chosen and g not in skip)


def options_from_recipe(recipe: Recipe | None, **overrides: Any) -> ValidateOptions:
    """Gate settings that follow the recipe (draft length, drafter floor) unless overridden."""
    values: dict[str, Any] = {}
    if recipe is not None:
        spec = recipe.speculative
        values["speculative_expected"] = spec.enabled
        values["num_speculative_tokens"] = spec.num_speculative_tokens if spec.enabled else None
        values["acceptance_floor"] = default_floor(spec.method)
        values["tools_expected"] = tuple(recipe.gates.tools_expected)
        values["longdecode_tokens"] = recipe.gates.longdecode_tokens
        values["longdecode_concurrency"] = recipe.longdecode_concurrency
        values["longdecode_window_tokens"] = recipe.gates.longdecode_window_tokens
        if recipe.engine.max_num_seqs is not None:
            values["sanity_levels"] = tuple(c for c in DEFAULT_LEVELS if c <= recipe.engine.max_num_seqs) or (1,)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return ValidateOptions(**values)


async def run_validate(
    client: OpenAIClient,
    *,
    options: ValidateOptions,
    run_dir: Path,
    recipe: Recipe | None = None,
    pins: Pins | None = None,
    on_gate: Callable[[GateResult], None] | None = None,
) -> ValidationResult:
    """Run the selected gates in order and write validation.json into run_dir."""
    run_dir.mkdir(parents=True, exist_ok=True)
    results: list[GateResult] = []
    model = options.model
    for name in options.gates:
        started = time.perf_counter()
        try:
            if model is None:
                model = await client.default_model()
            status, summary, report = await _run_gate(name, client, options, model, recipe, run_dir)
        except (ClientError, ValueError, KeyError) as exc:
            status, summary, report = "error", f"{type(exc).__name__}: {exc}", {}
        result = GateResult(
            name=name, status=status, summary=summary, duration_s=round(time.perf_counter() - started, 3), report=report
        )
        results.append(result)
        if on_gate is not None:
            on_gate(result)
    # What the deployment recorded at boot wins over what the server says now.
    server = Pins(vllm_version=await client.version(), served_model=model)
    all_pins = server.under(pins)
    validation = ValidationResult(
        ok=all(r.status in {"pass", "skip"} for r in results),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        base_url=client.api,
        model=model,
        pins=all_pins,
        gates=results,
        recipe=recipe.public_dict() if recipe is not None else None,
    )
    write_json(run_dir / "validation.json", validation.model_dump(mode="json"))
    return validation


async def _run_gate(
    name: str, client: OpenAIClient, options: ValidateOptions, model: str, recipe: Recipe | None, run_dir: Path
) -> tuple[str, str, dict[str, Any]]:
    if name == "readiness":
        health = await client.health()
        listed = await client.models()
        entry = next((m for m in listed if m.id == model), None)
        wanted = recipe.engine.max_model_len if recipe is not None else None
        problems = []
        if health != 200:
            problems.append(f"/health answered {health}")
        if entry is None:
            problems.append(f"/v1/models does not list {model!r}")
        elif wanted is not None and entry.max_model_len != wanted:
            problems.append(f"max_model_len {entry.max_model_len} != recipe {wanted}")
        summary = "; ".join(problems) or f"/health 200, {model} max_model_len {entry and entry.max_model_len}"
        return ("fail" if problems else "pass"), summary, {"health": health, "models": [m.model_dump() for m in listed]}
    if name == "smoke":
        smoke = await run_smoke(client, concurrency=options.smoke_concurrency, expect=options.expect, model=model)
        return ("pass" if smoke.ok else "fail"), f"{smoke.passed}/{smoke.concurrency} exact", _dump(smoke)
    if name == "sanity":
        sanity = await run_sanity(
            client,
            levels=options.sanity_levels,
            model=model,
            max_tokens=options.sanity_max_tokens,
            strict_cjk=options.strict_cjk,
            evidence_path=run_dir / "sanity.jsonl",
        )
        levels = ", ".join(f"c{s.concurrency} {s.success}" for s in sanity.levels)
        fired = sanity.detectors_fired
        summary = levels + (f"; fired: {fired}" if fired else "")
        return ("pass" if sanity.ok else "fail"), summary, _dump(sanity)
    if name == "tools":
        tools = await run_tools(client, model=model, expected=options.tools_expected)
        return ("pass" if tools.ok else "fail"), tools.summary, _dump(tools)
    if name == "longdecode":
        longdecode = await run_longdecode(
            client,
            model=model,
            tokens=options.longdecode_tokens,
            concurrency=options.longdecode_concurrency,
            window_tokens=options.longdecode_window_tokens,
            strict_cjk=options.strict_cjk,
            evidence_path=run_dir / "longdecode.jsonl",
        )
        return ("pass" if longdecode.ok else "fail"), longdecode.summary, _dump(longdecode)
    if name == "correctness":
        correctness = await run_correctness(client, model=model, acceptance_floor=options.acceptance_floor)
        parts = []
        for mode in correctness.modes:
            state = (
                "identical"
                if mode.identical
                else (f"DIFFERS at {mode.divergence.offset}" if mode.divergence else f"error: {mode.victim_error}")
            )
            rate = "n/a" if mode.acceptance_rate is None else f"{mode.acceptance_rate:.2f}"
            parts.append(f"{mode.mode}: {state}, acceptance {rate}")
        return ("pass" if correctness.ok else "fail"), "; ".join(parts), _dump(correctness)
    if name == "speculative":
        spec = await run_speculative_gate(
            client,
            model=model,
            num_speculative_tokens=options.num_speculative_tokens,
            expected=options.speculative_expected,
        )
        if spec.status == "skip":
            summary = "; ".join(spec.reasons)
        else:
            rates = ", ".join(f"{r:.2f}" for r in spec.per_position_rates)
            length = spec.mean_acceptance_length
            summary = (
                f"acceptance {spec.acceptance_rate or 0:.2f}, mean length "
                f"{length if length is None else round(length, 2)}, positions [{rates}]"
            )
            if spec.reasons:
                summary += "; " + "; ".join(spec.reasons)
        return spec.status, summary, _dump(spec)
    raise InputError(f"unknown gate {name!r}", key="gate", value=name, fix=f"the gates are {', '.join(GATES)}")


def _dump(model: BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(model.model_dump_json())
    return data
