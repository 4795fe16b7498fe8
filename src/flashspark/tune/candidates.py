"""The candidates of a tune: the recipe's own settings first, then every combination the search declares,
each screened by the recipe's rules and the planner before anything boots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flashspark.errors import FlashsparkError
from flashspark.plan.deployment import plan_deployment
from flashspark.recipe.model import Recipe
from flashspark.recipe.workload import KNOBS, Workload

#: Short names in candidate ids (file names too: only [a-z0-9.-]).
_ID_PARTS = {
    "max_num_seqs": "seqs",
    "max_num_batched_tokens": "mnbt",
    "num_speculative_tokens": "k",
    "gpu_memory_utilization": "gmu",
}

Resolve = Callable[[Sequence[str]], Recipe]


class Candidate(BaseModel):
    """One configuration to measure: the knobs it sets, on top of the base recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    settings: dict[str, int | float]
    baseline: bool = False

    @property
    def sets(self) -> tuple[str, ...]:
        """The `--set` pairs that make this candidate out of the base recipe."""
        return tuple(f"{KNOBS[knob]}={value}" for knob, value in self.settings.items())


class Screened(BaseModel):
    """A candidate after the rules and the planner: kept or dropped, and why."""

    model_config = ConfigDict(extra="forbid")

    candidate: Candidate
    verdict: Literal["measure", "dropped"]
    reasons: list[str] = Field(default_factory=list)
    predicted_kv_cache_tokens: int | None = None
    workload_fit: str | None = Field(default=None, description="The planner's verdict for the live requests.")
    workload_used_share: float | None = None


def recipe_value(recipe: Recipe, knob: str) -> int | float | None:
    section, field = KNOBS[knob].split(".")
    value = getattr(getattr(recipe, section), field)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def candidate_id(settings: dict[str, int | float]) -> str:
    return "-".join(f"{_ID_PARTS[knob]}{value:g}" for knob, value in settings.items()) or "recipe"


def candidates(workload: Workload, base: Recipe) -> list[Candidate]:
    """The baseline (the recipe's values of the varied knobs) first, then the grid without it."""
    varied = workload.search.varied()
    own = {knob: recipe_value(base, knob) for knob in varied}
    baseline = {knob: value for knob, value in own.items() if value is not None}
    found = [Candidate(id=candidate_id(baseline), settings=baseline, baseline=True)]
    for settings in workload.search.grid():
        if settings != baseline:
            found.append(Candidate(id=candidate_id(settings), settings=settings))
    return found


def live_requests(workload: Workload, recipe: Recipe) -> str:
    """The requests the pool holds at once, as COUNTxTOKENS for the planner: the traffic's in-flight
    requests, at most max_num_seqs of them (the rest wait outside the pool)."""
    traffic = workload.traffic
    count = min(traffic.in_flight, recipe.engine.max_num_seqs or traffic.in_flight)
    return f"{count}x{traffic.tokens_per_request}"


def screen(candidate: Candidate, workload: Workload, resolve: Resolve) -> Screened:
    """The candidate's recipe through the rules, then its live tokens through the planner's pool. The
    baseline is measured even when the screen would drop it: every other candidate is judged against it."""
    screened = _screen(candidate, workload, resolve)
    if candidate.baseline and screened.verdict == "dropped":
        screened.verdict = "measure"
        screened.reasons.append("measured anyway: the baseline every candidate is judged against")
    return screened


def _screen(candidate: Candidate, workload: Workload, resolve: Resolve) -> Screened:
    try:
        recipe = resolve(candidate.sets)
    except FlashsparkError as error:
        return Screened(candidate=candidate, verdict="dropped", reasons=[f"recipe: {one_line(error)}"])
    traffic = workload.traffic
    if recipe.engine.max_model_len is not None and traffic.tokens_per_request > recipe.engine.max_model_len:
        return Screened(
            candidate=candidate,
            verdict="dropped",
            reasons=[
                f"a request needs {traffic.tokens_per_request:,} tokens, over max_model_len "
                f"{recipe.engine.max_model_len:,}"
            ],
        )
    try:
        plan = plan_deployment(recipe, workload=live_requests(workload, recipe))
    except FlashsparkError as error:
        return Screened(candidate=candidate, verdict="measure", reasons=[f"not sized: {one_line(error)}"])
    fit = plan.workload or {}
    screened = Screened(
        candidate=candidate,
        verdict="measure",
        predicted_kv_cache_tokens=plan.kv_cache_tokens,
        workload_fit=fit.get("verdict"),
        workload_used_share=fit.get("used_share"),
    )
    if fit.get("verdict") == "does not fit":
        screened.verdict = "dropped"
        screened.reasons.append(
            f"the pool ({plan.kv_cache_tokens:,} tokens) cannot hold {fit.get('requests')} live requests of "
            f"{traffic.tokens_per_request:,} tokens ({fit.get('used_blocks'):,} of {fit.get('pool_blocks'):,} blocks)"
        )
    return screened


def one_line(error: FlashsparkError) -> str:
    """An error as one line: what is wrong, then its fix (a recipe's every problem, joined)."""
    return "; ".join(line.strip() for line in error.describe().splitlines() if line.strip())
