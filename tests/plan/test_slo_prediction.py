"""The SLO predictor's scheduler replay, on ladders whose costs make every expected time a hand sum.

Prefill ladders here are linear (T(d) = d / rate) and decode ladders have one token per step, so each
expected TTFT and decode rate below is worked out in the test's comments, not taken from the code.
"""

from __future__ import annotations

import pytest

from flashspark.errors import InputError
from flashspark.plan.slo import (
    DecodePoint,
    Ladders,
    PrefillPoint,
    SchedulerKnobs,
    Speeds,
    predict_slo,
    simulate,
)
from flashspark.recipe import resolve_recipe
from flashspark.recipe.workload import Workload


def ladders(
    *,
    prefill_tokens_per_s: float = 1000.0,
    decode: dict[int, float] | None = None,
    context: float = 0.0,
    depth_decode: dict[int, float] | None = None,
    tokens_per_step: float = 1.0,
) -> Ladders:
    depth_decode = depth_decode or {}
    return Ladders(
        prefill=[
            PrefillPoint(tokens=d, ttft_s=d / prefill_tokens_per_s, decode_tokens_per_s=depth_decode.get(d))
            for d in (1000, 2000, 4000)
        ],
        decode=[
            DecodePoint(
                concurrency=c, context_tokens=context, per_stream_decode_tokens_per_s=r, tokens_per_step=tokens_per_step
            )
            for c, r in (decode or {1: 100.0}).items()
        ],
    )


def workload(**traffic: object) -> Workload:
    return Workload.model_validate({"traffic": traffic})


KNOBS = SchedulerKnobs(max_num_seqs=16, max_num_batched_tokens=8192)


def test_one_request_alone_is_its_prefill_then_the_ladders_decode() -> None:
    # 1000 tokens at 1000 tok/s: first token at 1.0 s; 10 more tokens at 100 tok/s, one per 10 ms step.
    p = predict_slo(workload(concurrency=1, input_tokens=1000, output_tokens=11), KNOBS, ladders())
    assert p.ttft_p50_s == pytest.approx(1.0)
    assert p.ttft_p95_s == pytest.approx(1.0)
    assert p.per_stream_decode_tokens_per_s == pytest.approx(100.0)
    assert p.ttft_parts.own_prefill_s == pytest.approx(1.0)
    assert p.ttft_parts.behind_others_s == pytest.approx(0.0, abs=1e-9)


def test_prompts_queue_behind_each_others_chunks_by_the_batched_token_budget() -> None:
    # Four 1000-token prompts with a 2000-token budget: two finish prefill per step, each step 2 s,
    # so TTFTs are 2, 2, 4, 4 s: p50 3 s (halfway between 2 and 4), p95 4 s. One reply token: no decode.
    knobs = SchedulerKnobs(max_num_seqs=16, max_num_batched_tokens=2000)
    p = predict_slo(workload(concurrency=4, input_tokens=1000, output_tokens=1), knobs, ladders())
    assert p.ttft_p50_s == pytest.approx(3.0)
    assert p.ttft_p95_s == pytest.approx(4.0)
    assert p.ttft_parts.own_prefill_s == pytest.approx(1.0)
    assert p.ttft_parts.behind_others_s == pytest.approx(2.0)  # mean TTFT 3 s - own 1 s


def test_one_token_less_budget_splits_a_prompt_across_steps() -> None:
    # Two 1000-token prompts. A 2000-token budget prefills both in one 2 s step. With 1999 the first
    # step takes 1000 + 999 tokens (1.999 s; the first prompt's first token then), and the second
    # prompt's last token needs a step of its own (1 ms): its first token at 2.0 s.
    traffic = workload(concurrency=2, input_tokens=1000, output_tokens=1).traffic
    speeds = Speeds.of(ladders(), 1000)
    whole = simulate(traffic, SchedulerKnobs(max_num_seqs=16, max_num_batched_tokens=2000), speeds)
    split = simulate(traffic, SchedulerKnobs(max_num_seqs=16, max_num_batched_tokens=1999), speeds)
    assert [r.first for r in whole] == [pytest.approx(2.0), pytest.approx(2.0)]
    assert [r.first for r in split] == [pytest.approx(1.999), pytest.approx(2.0)]


def test_decoders_take_their_draft_tokens_out_of_the_budget() -> None:
    # Two 1000-token prompts, a 1001-token budget, decode steps of 10 ms. Step 1: 1000 + 1 tokens
    # (1.001 s). Step 2: the first request decodes; without drafts it books 1 token, leaving 1000 for
    # the second prompt's 999: its first token at 1.001 + 0.010 + 0.999 = 2.010 s. With k = 4 it books
    # 5, leaving 996: a third step takes the last 3 tokens, so 1.001 + 1.006 + 0.013 = 2.020 s.
    traffic = workload(concurrency=2, input_tokens=1000, output_tokens=50).traffic
    speeds = Speeds.of(ladders(), 1000)
    plain = simulate(traffic, SchedulerKnobs(max_num_seqs=16, max_num_batched_tokens=1001), speeds)
    drafting = simulate(
        traffic, SchedulerKnobs(max_num_seqs=16, max_num_batched_tokens=1001, num_speculative_tokens=4), speeds
    )
    assert plain[1].first == pytest.approx(2.010)
    assert drafting[1].first == pytest.approx(2.020)


def test_max_num_seqs_makes_a_request_wait_for_a_slot() -> None:
    # One sequence at a time: the second request waits for the first's 1 s prefill and 10 decode steps
    # of 10 ms (0.1 s), then its own 1 s prefill: TTFTs 1.0 and 2.1 s, waits 0 and 1.1 s.
    knobs = SchedulerKnobs(max_num_seqs=1, max_num_batched_tokens=8192)
    p = predict_slo(workload(concurrency=2, input_tokens=1000, output_tokens=11), knobs, ladders())
    assert p.ttft_p50_s == pytest.approx((1.0 + 2.1) / 2)
    assert p.ttft_parts.waiting_for_a_slot_s == pytest.approx(1.1 / 2)


def test_the_clients_cap_holds_requests_and_ttft_counts_from_the_send() -> None:
    # Two arrivals 1 ms apart, a client cap of 1: the second is sent when the first finishes (1.1 s), so
    # its TTFT counts from 1.1 s and is its own 1 s prefill, like the first's.
    traffic = workload(shape="rate", rate=1000.0, requests=2, concurrency=1, input_tokens=1000, output_tokens=11)
    p = predict_slo(traffic, KNOBS, ladders())
    assert p.ttft_p95_s == pytest.approx(1.0)
    assert p.ttft_parts.waiting_for_a_slot_s == pytest.approx(0.0)


def test_decode_rate_interpolates_between_two_context_ladders_and_extrapolates_past_the_longest() -> None:
    # Ladders at contexts 1000 (100 tok/s, 10 ms/step) and 3000 (50 tok/s, 20 ms/step). At 2000 the step
    # is 15 ms. Past 3000 each stream adds kappa per token: the depth run's single-stream step grows
    # from 1/50 s at 2000 to 1/25 s at 4000, kappa = 0.02 s / 2000 tokens = 1e-5 s per token.
    two = Ladders(
        prefill=[
            PrefillPoint(tokens=1000, ttft_s=1.0, decode_tokens_per_s=100.0),
            PrefillPoint(tokens=2000, ttft_s=2.0, decode_tokens_per_s=50.0),
            PrefillPoint(tokens=4000, ttft_s=4.0, decode_tokens_per_s=25.0),
        ],
        decode=[
            DecodePoint(concurrency=1, context_tokens=1000, per_stream_decode_tokens_per_s=100.0),
            DecodePoint(concurrency=1, context_tokens=3000, per_stream_decode_tokens_per_s=50.0),
        ],
    )
    assert Speeds.of(two, 2000).decode_step(1)[0] == pytest.approx(0.015)
    assert Speeds.of(two, 500).decode_step(1)[0] == pytest.approx(0.010)  # below the first: the first's
    assert Speeds.of(two, 3000).s_per_context_token == pytest.approx(1e-5)
    assert Speeds.of(two, 4000).decode_step(2)[0] == pytest.approx(two_streams_at_3000(two) + 2 * 1000 * 1e-5)


def two_streams_at_3000(two: Ladders) -> float:
    # the 3000 ladder has one level (1 stream, 50 tok/s): past it the aggregate is flat, 2 streams 25 each
    return 1 / 25


def test_past_the_top_level_the_aggregate_is_flat() -> None:
    speeds = Speeds.of(ladders(decode={1: 100.0, 4: 50.0}), 0)
    assert speeds.decode_step(4)[0] == pytest.approx(1 / 50)
    assert speeds.decode_step(8)[0] == pytest.approx(1 / 25)  # 200 tok/s over 8 streams
    assert speeds.decode_step(2)[0] == pytest.approx(1 / (100 - 50 / 3))  # linear between 1 and 4


def test_tokens_per_step_turns_a_step_into_several_tokens() -> None:
    # 5 tokens per step at 100 tok/s: 50 ms steps; 10 tokens after the first take 2 steps, 0.1 s.
    p = predict_slo(workload(concurrency=1, input_tokens=1000, output_tokens=11), KNOBS, ladders(tokens_per_step=5.0))
    assert p.per_stream_decode_tokens_per_s == pytest.approx(100.0)


def test_a_noisy_ladder_never_makes_a_longer_prompt_cheaper() -> None:
    bumpy = Ladders(
        prefill=[PrefillPoint(tokens=100, ttft_s=0.7), PrefillPoint(tokens=300, ttft_s=0.4)],
        decode=[DecodePoint(concurrency=1, context_tokens=0, per_stream_decode_tokens_per_s=100.0)],
    )
    speeds = Speeds.of(bumpy, 0)
    assert speeds.prefill_s(100, 300) == 0.0
    assert speeds.prefill_s(0, 300) == pytest.approx(0.7)


def test_the_rate_shape_replays_the_benchs_own_arrival_schedule() -> None:
    from flashspark.bench.runner import rate_cells

    traffic = workload(shape="rate", rate=2.0, requests=9, concurrency=4, seed=7).traffic
    assert traffic.arrivals() == rate_cells(2.0, 9, 4, 7)[0].arrivals_s
    assert [r.arrival for r in simulate(traffic, KNOBS, Speeds.of(ladders(), 100))] == traffic.arrivals()


def test_ladders_of_another_deployment_are_named_in_the_warnings() -> None:
    measured = ladders().model_copy(update={"measured_with": {"num_speculative_tokens": 5, "model": "a"}})
    knobs = SchedulerKnobs(max_num_seqs=16, max_num_batched_tokens=8192, num_speculative_tokens=3, model="a")
    p = predict_slo(workload(concurrency=32, input_tokens=5000), knobs, measured)
    assert any("num_speculative_tokens 5" in w and "3" in w for w in p.warnings)
    assert not any("model" in w for w in p.warnings)
    assert any("5,000 tokens are past the prefill ladder's deepest point (4,000)" in w for w in p.warnings)
    assert any("16 streams decode at once" in w for w in p.warnings)
    at_the_deepest = predict_slo(workload(concurrency=1, input_tokens=4000), knobs, measured)
    assert not any("past the prefill ladder" in w for w in at_the_deepest.warnings)


def test_knobs_come_from_the_recipe_and_a_knob_left_to_vllm_is_refused() -> None:
    recipe = resolve_recipe(profile="local-cpu").recipe
    knobs = SchedulerKnobs.of(recipe)
    assert (knobs.max_num_seqs, knobs.max_num_batched_tokens, knobs.num_speculative_tokens) == (16, 4096, 5)
    unset = recipe.model_copy(update={"engine": recipe.engine.model_copy(update={"max_num_batched_tokens": None})})
    with pytest.raises(InputError) as caught:
        SchedulerKnobs.of(unset)
    assert caught.value.key == "engine.max_num_batched_tokens"
    off = recipe.model_copy(update={"speculative": recipe.speculative.model_copy(update={"method": None})})
    assert SchedulerKnobs.of(off).num_speculative_tokens == 0


def test_a_prompt_past_the_deepest_point_follows_the_last_segment() -> None:
    # The ladder ends at 4000 tokens (4 s); 5000 tokens cost 5 s along its last segment, not 4 s.
    p = predict_slo(workload(concurrency=1, input_tokens=5000, output_tokens=1), KNOBS, ladders())
    assert p.ttft_p95_s == pytest.approx(5.0)


def test_kappa_counts_a_depth_exactly_at_the_decode_ladders_context() -> None:
    # Depths 2000 and 4000, a decode ladder at context 2000: both depths count, the slope is
    # (1/25 - 1/50) s over 2000 tokens = 1e-5 s per token. Leaving the 2000 point out leaves one: 0.
    at_edge = Ladders(
        prefill=[
            PrefillPoint(tokens=2000, ttft_s=2.0, decode_tokens_per_s=50.0),
            PrefillPoint(tokens=4000, ttft_s=4.0, decode_tokens_per_s=25.0),
        ],
        decode=[DecodePoint(concurrency=1, context_tokens=2000, per_stream_decode_tokens_per_s=50.0)],
    )
    assert Speeds.of(at_edge, 2000).s_per_context_token == pytest.approx(1e-5)


def test_a_traffic_too_large_to_replay_is_refused_in_bounded_time() -> None:
    # One 4096-request burst, 1-token prompts, one token per step: every request runs in 1 + (N - 1)
    # steps. 488 tokens: 4096 x 488 = 1,998,848 request-steps, under the 2,000,000 bound; 490 crosses it.
    # (When the bound counted steps, the 16M-token prompts below ran for over five minutes.)
    knobs = SchedulerKnobs(max_num_seqs=4096, max_num_batched_tokens=1 << 20)
    assert predict_slo(workload(concurrency=4096, input_tokens=1, output_tokens=488), knobs, ladders()).requests == 4096
    with pytest.raises(InputError, match="2,000,000 request-steps") as caught:
        predict_slo(workload(concurrency=4096, input_tokens=1, output_tokens=490), knobs, ladders())
    assert caught.value.key == "--workload"
    huge = workload(shape="rate", rate=10_000.0, requests=100_000, concurrency=4096, input_tokens=1 << 24)
    with pytest.raises(InputError, match="request-steps"):
        predict_slo(huge, SchedulerKnobs(max_num_seqs=4096, max_num_batched_tokens=1), ladders())
