"""`flashspark tune`: screen the candidates, measure each on a fresh deployment, judge, recommend.

Everything lands in one folder, written as it happens, so an interrupted tune resumes where it stopped:

    tune.json                   the workload, the base recipe, the screen, every result, the verdict
    candidates/<id>/result.json one candidate's numbers (written last: its presence means "done")
    candidates/<id>/boot.json   that boot's evidence (KV pool, pins)
    candidates/<id>/bench/      the bench run (results.json, requests.jsonl, summary.csv)
    recommended.toml            the recommendation as a profile overlay

Resuming takes the same workload and base recipe (a fingerprint in tune.json says so); finished
candidates are read back from their result.json, a candidate an interruption cut short is measured
again (its partial folder kept beside it as `<id>.interrupted`), and a deployment the interrupted run
left serving is stopped first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flashspark.cluster.events import Events
from flashspark.cluster.lifecycle import deployment_running, down
from flashspark.cluster.provision import provision
from flashspark.errors import InputError
from flashspark.files import read_model, write_atomic, write_json
from flashspark.pins import pins_in_boot_record
from flashspark.recipe.model import Recipe
from flashspark.recipe.workload import Workload
from flashspark.tune.analysis import Standing, Verdict, mark_pareto, overlay_toml, standing, verdict
from flashspark.tune.candidates import Candidate, Resolve, Screened, candidates, screen
from flashspark.tune.measure import CandidateResult, measure

TUNE_SCHEMA_VERSION = 1

Measure = Callable[[Candidate, Recipe, Workload, Path, Events], Awaitable[CandidateResult]]


class TuneResults(BaseModel):
    """tune.json: everything a tune knows, rewritten after every step."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = TUNE_SCHEMA_VERSION
    workload: Workload
    fingerprint: str = Field(description="The workload and base recipe this folder belongs to.")
    recipe: dict[str, object] = Field(description="The base recipe, resolved, secrets masked.")
    pins: dict[str, object] = Field(default_factory=dict, description="The first measured boot's pin set.")
    screened: list[Screened] = Field(default_factory=list)
    results: list[CandidateResult] = Field(default_factory=list)
    active: str | None = Field(default=None, description="The candidate being measured (set while it runs).")
    resumed: list[str] = Field(default_factory=list, description="Candidates an earlier run had finished.")
    standings: list[Standing] = Field(default_factory=list)
    verdict: Verdict | None = None
    overlay: str | None = None
    complete: bool = False


def fingerprint(workload: Workload, recipe: Recipe) -> str:
    """What must match to resume: the workload and the base recipe (its paths aside: they are the machine's)."""
    public = {k: v for k, v in recipe.public_dict().items() if k != "paths"}
    text = json.dumps({"workload": workload.model_dump(mode="json"), "recipe": public}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished(folder: Path, candidate: Candidate) -> CandidateResult | None:
    """The candidate's result.json, when an earlier run finished it with these very settings."""
    path = folder / "result.json"
    try:
        result = CandidateResult.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError):
        return None
    return result if result.candidate == candidate else None


async def run_tune(
    workload: Workload,
    resolve: Resolve,
    out: Path,
    *,
    events: Events,
    dry_run: bool = False,
    measure_one: Measure = measure,
) -> TuneResults:
    """Screen, measure (or read back) every kept candidate, judge; see the module docstring."""
    base = resolve(())
    # The planner reads a local model's config.json: build it (and the engine) as `up` would.
    provision(base, events=events)
    state = TuneResults(workload=workload, fingerprint=fingerprint(workload, base), recipe=base.public_dict())
    path = out / "tune.json"
    if path.is_file():
        earlier = read_model(
            path,
            TuneResults,
            what="a tune.json FlashSpark can read",
            fix="give a new --out (this folder was not written by flashspark tune, or by another version)",
        )
        if earlier.fingerprint != state.fingerprint:
            raise InputError(
                f"{out} holds a tune of another workload or base recipe",
                where=str(path),
                fix="give a new --out, or resume with the same --workload, profile, config and --set",
            )
        if earlier.active is not None:
            await stop_left_over(earlier, resolve, events)
    state.screened = [screen(c, workload, resolve) for c in candidates(workload, base)]
    write_json(path, state.model_dump(mode="json"))
    if dry_run:
        return state
    for screened in state.screened:
        if screened.verdict != "measure":
            continue
        candidate = screened.candidate
        folder = out / "candidates" / candidate.id
        result = finished(folder, candidate)
        if result is not None:
            state.resumed.append(candidate.id)
            events.note(f"{candidate.id}: measured by an earlier run, kept")
        else:
            if folder.exists():
                cut = folder.with_name(f"{candidate.id}.interrupted")
                shutil.rmtree(cut, ignore_errors=True)
                folder.rename(cut)
            state.active = candidate.id
            write_json(path, state.model_dump(mode="json"))
            events.phase(f"candidate {candidate.id}", "start", " ".join(candidate.sets) or "the recipe as it is")
            result = await measure_one(candidate, resolve(candidate.sets), workload, folder, events)
            write_json(folder / "result.json", result.model_dump(mode="json"))
            events.phase(f"candidate {candidate.id}", "ok" if result.status == "measured" else "fail", _line(result))
        state.results.append(result)
        state.active = None
        if not state.pins:
            state.pins = pins_in_boot_record(folder / "boot.json")
        write_json(path, state.model_dump(mode="json"))
    state.standings = [standing(r, workload.objective) for r in state.results]
    mark_pareto(state.standings)
    state.verdict = verdict(state.standings, workload.objective)
    chosen = next((s for s in state.standings if s.id == state.verdict.best), None)
    base_standing = next(s for s in state.standings if s.baseline)
    overlay = out / "recommended.toml"
    write_atomic(
        overlay, overlay_toml(base.profile.name, workload.name, chosen if state.verdict.beats_baseline else None,
                              base_standing, state.verdict.text)
    )  # fmt: skip
    state.overlay = str(overlay)
    state.complete = True
    write_json(path, state.model_dump(mode="json"))
    return state


async def stop_left_over(earlier: TuneResults, resolve: Resolve, events: Events) -> None:
    """Stop the deployment an interrupted run left serving (a kill that gave it no time to stop it)."""
    active = next((s.candidate for s in earlier.screened if s.candidate.id == earlier.active), None)
    if active is None:
        return
    recipe = resolve(active.sets)
    if await deployment_running(recipe) is not None:
        events.note(f"stopping the deployment the interrupted run left serving ({active.id})")
        await down(recipe, events=events)


def _line(result: CandidateResult) -> str:
    if result.status != "measured":
        return (result.error or "failed").splitlines()[0]
    values = result.values("output_tokens_per_s")
    return f"{min(values):.1f}..{max(values):.1f} tok/s over {len(values)} rounds" if values else "no rounds"
