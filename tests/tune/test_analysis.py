"""Judging measured candidates: limits, the Pareto front, a win only beyond the run-to-run spread, and the
overlay a recommendation is written as."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from flashspark.recipe import resolve_recipe
from flashspark.recipe.workload import Objective
from flashspark.tune.analysis import mark_pareto, overlay_toml, standing, verdict
from flashspark.tune.candidates import Candidate
from flashspark.tune.measure import CandidateResult, RoundMetrics


def result(
    cid: str,
    tput: list[float],
    ttft: list[float] | None = None,
    *,
    baseline: bool = False,
    settings: dict[str, int | float] | None = None,
    failed: int = 0,
    decode: float = 10.0,
) -> CandidateResult:
    ttft = ttft or [1.0] * len(tput)
    rounds = [
        RoundMetrics(
            round=i,
            cell=f"c{i}",
            requests=4,
            failed=failed if i == 0 else 0,
            output_tokens_per_s=t,
            per_stream_decode_tokens_per_s=decode,
            p95_ttft_s=latency,
        )
        for i, (t, latency) in enumerate(zip(tput, ttft, strict=True))
    ]
    return CandidateResult(
        candidate=Candidate(id=cid, settings=settings or {}, baseline=baseline),
        status="measured",
        rounds=rounds,
        evidence="/nowhere",
    )


MAXIMISE = Objective()


def judge(*results: CandidateResult, objective: Objective = MAXIMISE) -> object:
    standings = [standing(r, objective) for r in results]
    mark_pareto(standings)
    return verdict(standings, objective)


def test_a_lead_equal_to_the_spread_is_not_a_win_and_one_past_it_is() -> None:
    base = result("base", [100.0, 104.0, 102.0], baseline=True)  # median 102, spread 4
    tie = judge(base, result("a", [105.0, 106.0, 107.0]))  # median 106: leads by exactly 4
    assert (tie.best, tie.beats_baseline, tie.margin, tie.spread) == ("a", False, 4.0, 4.0)
    assert "within the spread" in tie.text
    win = judge(base, result("a", [105.0, 106.5, 107.0]))  # leads by 4.5
    assert (win.best, win.beats_baseline, win.margin) == ("a", True, 4.5)
    assert "beats the recipe's settings" in win.text


def test_the_wider_spread_of_the_two_counts() -> None:
    base = result("base", [100.0, 100.0, 100.0], baseline=True)
    noisy = judge(base, result("a", [90.0, 110.0, 125.0]))  # leads by 10, its own spread 35
    assert (noisy.beats_baseline, noisy.spread) == (False, 35.0)


def test_a_minimised_objective_wins_downwards() -> None:
    objective = Objective(optimise="p95_ttft_s")
    base = result("base", [1.0, 1.0, 1.0], [2.0, 2.1, 2.2], baseline=True)
    faster = result("a", [1.0, 1.0, 1.0], [1.0, 1.1, 1.2])
    slower = result("b", [1.0, 1.0, 1.0], [3.0, 3.0, 3.0])
    found = judge(base, faster, slower, objective=objective)
    assert (found.best, found.beats_baseline, found.margin) == ("a", True, 1.0)


def test_limits_decide_feasibility_and_the_baseline_missing_them_loses() -> None:
    objective = Objective(max_p95_ttft_s=1.5, min_per_stream_decode_tokens_per_s=5.0)
    base = standing(result("base", [200.0, 200.0], [1.6, 1.6], baseline=True), objective)
    assert not base.feasible and base.violations == ["p95 TTFT 1.600 s > 1.5 s"]
    at_limit = standing(result("a", [100.0, 100.0], [1.5, 1.5], decode=5.0), objective)
    assert at_limit.feasible  # at the limit is within it
    slow = standing(result("b", [300.0, 300.0], [1.0, 1.0], decode=4.9), objective)
    assert slow.violations == ["per-stream decode 4.90 tok/s < 5 tok/s"]
    found = verdict([base, at_limit, slow], objective)
    assert (found.best, found.beats_baseline) == ("a", True)
    assert "meets the limits the recipe's settings miss" in found.text


def test_a_failed_request_or_boot_is_not_feasible() -> None:
    lost = standing(result("a", [500.0, 500.0], failed=1), MAXIMISE)
    assert lost.violations == ["1 request(s) failed"]
    unbooted = CandidateResult(
        candidate=Candidate(id="b", settings={}), status="failed", error="port never opened", evidence="/x"
    )
    assert standing(unbooted, MAXIMISE).violations == ["did not run: port never opened"]
    base = result("base", [100.0, 101.0], baseline=True)
    assert judge(base, result("a", [500.0, 500.0], failed=1)).best == "base"


def test_nothing_feasible_keeps_the_recipe() -> None:
    objective = Objective(max_p95_ttft_s=0.1)
    found = judge(result("base", [100.0, 100.0], baseline=True), result("a", [9.0, 9.0]), objective=objective)
    assert (found.best, found.beats_baseline) == (None, False)
    assert "no candidate met" in found.text


def test_the_pareto_front_keeps_only_the_undominated() -> None:
    standings = [
        standing(result("fast-first-token", [100.0, 100.0], [0.5, 0.5], baseline=True), MAXIMISE),
        standing(result("high-throughput", [300.0, 300.0], [2.0, 2.0]), MAXIMISE),
        standing(result("dominated", [99.0, 99.0], [2.0, 2.0]), MAXIMISE),
        standing(result("tied-on-one", [300.0, 300.0], [2.5, 2.5]), MAXIMISE),  # worse TTFT, same throughput
    ]
    mark_pareto(standings)
    assert [s.id for s in standings if s.pareto] == ["fast-first-token", "high-throughput"]


def test_the_overlay_holds_only_what_changes_and_loads_as_a_recipe(tmp_path: Path) -> None:
    base = standing(result("base", [100.0, 101.0], baseline=True, settings={"max_num_seqs": 16}), MAXIMISE)
    chosen = standing(
        result("seqs8-k3", [150.0, 151.0], settings={"max_num_seqs": 8, "num_speculative_tokens": 3}), MAXIMISE
    )
    text = overlay_toml("local-cpu", "chat", chosen, base, "seqs8-k3 beats the recipe's settings")
    assert tomllib.loads(text) == {
        "profile": {"name": "local-cpu"},
        "engine": {"max_num_seqs": 8},
        "speculative": {"num_speculative_tokens": 3},
    }
    path = tmp_path / "recommended.toml"
    path.write_text(text)
    recipe = resolve_recipe(config=path).recipe
    assert (recipe.profile.name, recipe.engine.max_num_seqs, recipe.speculative.num_speculative_tokens) == (
        "local-cpu",
        8,
        3,
    )
    assert "# chosen seqs8-k3: 150.50 tok/s (150.00..151.00)" in text


def test_no_winner_writes_an_overlay_that_changes_nothing() -> None:
    base = standing(result("base", [100.0, 101.0], baseline=True, settings={"max_num_seqs": 16}), MAXIMISE)
    text = overlay_toml("local-cpu", "chat", None, base, "none beats")
    assert tomllib.loads(text) == {"profile": {"name": "local-cpu"}}


@pytest.mark.parametrize(
    "hostile",
    ['x"\n[engine]\nmax_num_seqs = 999\n#', "a\rb\u2028c\n[api]\nhost = '0.0.0.0'", "\x00\x1b[31m"],
)
def test_hostile_text_cannot_add_settings_to_the_overlay(hostile: str) -> None:
    base = standing(result("base", [100.0, 101.0], baseline=True), MAXIMISE)
    text = overlay_toml(hostile, hostile, None, base, hostile)
    parsed = tomllib.loads(text)
    assert parsed == {"profile": {"name": hostile}}


def test_a_knob_the_winner_shares_with_the_recipe_is_not_written() -> None:
    base = standing(
        result("seqs16-k5", [100.0, 101.0], baseline=True, settings={"max_num_seqs": 16, "num_speculative_tokens": 5}),
        MAXIMISE,
    )
    chosen = standing(
        result("seqs16-k3", [150.0, 151.0], settings={"max_num_seqs": 16, "num_speculative_tokens": 3}), MAXIMISE
    )
    text = overlay_toml("local-cpu", "chat", chosen, base, "k3 wins")
    assert tomllib.loads(text) == {"profile": {"name": "local-cpu"}, "speculative": {"num_speculative_tokens": 3}}
