"""What the measured candidates mean: medians and spreads, the constraints, the Pareto front, and whether
anything beats the recipe's own settings by more than the run-to-run spread."""

from __future__ import annotations

import json
import statistics

from pydantic import BaseModel, ConfigDict, Field

from flashspark.recipe.workload import KNOBS, Objective
from flashspark.tune.measure import CandidateResult


class Spread(BaseModel):
    """A metric over a candidate's rounds: the median and the range the rounds covered."""

    model_config = ConfigDict(extra="forbid")

    median: float
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        if not values:
            return None
        return cls(median=statistics.median(values), low=min(values), high=max(values))


class Standing(BaseModel):
    """One measured candidate judged against the objective."""

    model_config = ConfigDict(extra="forbid")

    id: str
    settings: dict[str, int | float]
    baseline: bool
    output_tokens_per_s: Spread | None = None
    per_stream_decode_tokens_per_s: Spread | None = None
    p95_ttft_s: Spread | None = None
    failed_requests: int = 0
    feasible: bool = False
    violations: list[str] = Field(default_factory=list)
    pareto: bool = False

    def metric(self, name: str) -> Spread | None:
        value: Spread | None = getattr(self, name)
        return value


class Verdict(BaseModel):
    """The recommendation: the best feasible candidate and how it compares with the recipe's settings."""

    model_config = ConfigDict(extra="forbid")

    best: str | None
    baseline: str
    beats_baseline: bool
    margin: float | None = Field(default=None, description="Best minus baseline medians, better-direction positive.")
    spread: float | None = Field(default=None, description="The wider of the two candidates' round ranges.")
    text: str


def standing(result: CandidateResult, objective: Objective) -> Standing:
    """Medians and ranges of a candidate's rounds; feasible when it measured, lost no request and its
    medians meet every limit."""
    judged = Standing(
        id=result.candidate.id,
        settings=result.candidate.settings,
        baseline=result.candidate.baseline,
        output_tokens_per_s=Spread.of(result.values("output_tokens_per_s")),
        per_stream_decode_tokens_per_s=Spread.of(result.values("per_stream_decode_tokens_per_s")),
        p95_ttft_s=Spread.of(result.values("p95_ttft_s")),
        failed_requests=sum(r.failed for r in result.rounds),
    )
    if result.status != "measured":
        judged.violations.append(f"did not run: {result.error}")
        return judged
    if judged.failed_requests:
        judged.violations.append(f"{judged.failed_requests} request(s) failed")
    if judged.metric(objective.optimise) is None:
        judged.violations.append(f"no {objective.optimise} was measured")
    ttft, decode = judged.p95_ttft_s, judged.per_stream_decode_tokens_per_s
    if objective.max_p95_ttft_s is not None and (ttft is None or ttft.median > objective.max_p95_ttft_s):
        shown = f"{ttft.median:.3f} s" if ttft else "none"
        judged.violations.append(f"p95 TTFT {shown} > {objective.max_p95_ttft_s:g} s")
    limit = objective.min_per_stream_decode_tokens_per_s
    if limit is not None and (decode is None or decode.median < limit):
        shown = f"{decode.median:.2f} tok/s" if decode else "none"
        judged.violations.append(f"per-stream decode {shown} < {limit:g} tok/s")
    judged.feasible = not judged.violations
    return judged


def mark_pareto(standings: list[Standing]) -> None:
    """Throughput (more is better) against p95 TTFT (less is better): a candidate is on the front when no
    other is at least as good on both and better on one."""
    points = [
        (s, s.output_tokens_per_s.median, s.p95_ttft_s.median)
        for s in standings
        if s.output_tokens_per_s is not None and s.p95_ttft_s is not None and not s.failed_requests
    ]
    for s, tput, ttft in points:
        s.pareto = not any(
            (t2 >= tput and l2 <= ttft) and (t2 > tput or l2 < ttft) for other, t2, l2 in points if other is not s
        )


def verdict(standings: list[Standing], objective: Objective) -> Verdict:
    """The best feasible candidate, and whether it beats the baseline by more than either's spread."""
    metric, sign = objective.optimise, (1.0 if objective.direction == "max" else -1.0)
    base = next(s for s in standings if s.baseline)
    feasible = [s for s in standings if s.feasible]
    if not feasible:
        return Verdict(
            best=None,
            baseline=base.id,
            beats_baseline=False,
            text="no candidate met the objective's limits; the recipe's settings stay (see each candidate's "
            "violations)",
        )
    best = max(feasible, key=lambda s: sign * _median(s, metric))
    if best is base:
        return Verdict(
            best=best.id,
            baseline=base.id,
            beats_baseline=False,
            margin=0.0,
            text=f"none beats the recipe's settings ({base.id}) on {metric}: it is the best measured",
        )
    if not base.feasible:
        return Verdict(
            best=best.id,
            baseline=base.id,
            beats_baseline=True,
            text=f"{best.id} meets the limits the recipe's settings miss ({'; '.join(base.violations)})",
        )
    margin = sign * (_median(best, metric) - _median(base, metric))
    spread = max(_width(best, metric), _width(base, metric))
    if margin > spread:
        text = f"{best.id} beats the recipe's settings on {metric} by {margin:.3g}, more than the spread {spread:.3g}"
    else:
        text = (
            f"none beats the recipe's settings beyond the run-to-run spread: the best, {best.id}, leads by "
            f"{margin:.3g} on {metric}, within the spread {spread:.3g}"
        )
    return Verdict(
        best=best.id,
        baseline=base.id,
        beats_baseline=margin > spread,
        margin=round(margin, 4),
        spread=round(spread, 4),
        text=text,
    )


def _median(s: Standing, metric: str) -> float:
    value = s.metric(metric)
    assert value is not None  # feasible candidates measured their objective
    return value.median


def _width(s: Standing, metric: str) -> float:
    value = s.metric(metric)
    return value.width if value is not None else 0.0


def overlay_toml(profile: str, workload: str, chosen: Standing | None, base: Standing, text: str) -> str:
    """The recommendation as a profile overlay: `--config` it (profile alone), or copy its sections into a
    cluster file. Only the knobs that change are written; the numbers behind them are comments."""

    def toml_string(value: str) -> str:
        return json.dumps(value, ensure_ascii=True)  # a JSON ASCII string is a valid TOML basic string

    def comment(value: str) -> str:
        # A TOML comment ends at a newline and refuses control characters: printable ASCII only.
        ascii_text = value.encode("ascii", "backslashreplace").decode()
        return "# " + "".join(ch if " " <= ch < "\x7f" else " " for ch in ascii_text)

    lines = [
        comment(f"flashspark tune: workload {workload!r}"),
        comment(text),
    ]
    for s in (base, chosen):
        if s is not None:
            lines.append(comment(f"{'recipe' if s.baseline else 'chosen'} {s.id}: {_numbers(s)}"))
    lines += ["", "[profile]", f"name = {toml_string(profile)}"]
    changed = chosen.settings if chosen is not None and not chosen.baseline else {}
    sections: dict[str, list[str]] = {}
    for knob, value in changed.items():
        if base.settings.get(knob) == value:
            continue
        section, field = KNOBS[knob].split(".")
        sections.setdefault(section, []).append(f"{field} = {value!r}")
    if not sections:
        lines += ["", comment("no change: the recipe's settings are the recommendation")]
    for section, entries in sections.items():
        lines += ["", f"[{section}]", *entries]
    return "\n".join(lines) + "\n"


def _numbers(s: Standing) -> str:
    parts = []
    for name, unit in (("output_tokens_per_s", "tok/s"), ("per_stream_decode_tokens_per_s", "tok/s/stream")):
        value = s.metric(name)
        if value is not None:
            parts.append(f"{value.median:.2f} {unit} ({value.low:.2f}..{value.high:.2f})")
    if s.p95_ttft_s is not None:
        parts.append(f"p95 TTFT {s.p95_ttft_s.median:.3f} s ({s.p95_ttft_s.low:.3f}..{s.p95_ttft_s.high:.3f})")
    return ", ".join(parts) or "not measured"
