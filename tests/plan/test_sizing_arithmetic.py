"""The KV sizing arithmetic on a small hand-made layout, every number worked out by hand below:
which formula a vLLM version uses, how many tokens are in flight, and the blocks a boot implies."""

from __future__ import annotations

import pytest

from flashspark.errors import InputError
from flashspark.plan.layouts import CacheGroup, KVLayout
from flashspark.plan.sizing import blocks_from_reported, formula_for, in_flight_tokens, parse_version, size_kv

# A full-attention group (100-byte pages of 16 tokens) and a sliding one (10-byte pages, window 32).
LAYOUT = KVLayout(
    model="hand-made",
    kv_cache_dtype="auto",
    block_size=16,
    groups=(CacheGroup("full", 100, 16), CacheGroup("sliding", 10, 16, window=32)),
    bytes_per_block=110,
)


@pytest.mark.parametrize(
    ("text", "version"),
    [("0.33.1", (0, 33)), ("v0.21", (0, 21)), (" 1 ", (1, 0)), ("0.32.0", (0, 32))],
)
def test_versions_are_read_as_major_minor(text: str, version: tuple[int, int]) -> None:
    assert parse_version(text) == version


def test_a_version_that_is_not_one_is_named_with_its_fix() -> None:
    with pytest.raises(InputError) as caught:
        parse_version("latest")
    error = caught.value
    assert (error.message, error.key, error.value, error.fix) == (
        "not a vLLM version: 'latest'",
        "--vllm-version",
        "latest",
        "write e.g. 0.21 or 0.33",
    )


@pytest.mark.parametrize(
    ("version", "formula"), [("0.26", "sum"), ("0.31.9", "sum"), ("0.32", "per_group"), ("1.0", "per_group")]
)
def test_the_formula_changes_at_0_32(version: str, formula: str) -> None:
    assert formula_for(version) == formula


@pytest.mark.parametrize(
    ("version", "async_scheduling", "pp", "batches", "tokens"),
    [
        ("0.25", True, 1, None, 64),  # before 0.26 one batch, whatever the scheduling
        ("0.26", False, 1, None, 64),
        ("0.26", True, 1, None, 128),  # async scheduling keeps a second batch in flight
        ("0.33", True, 2, None, 128),  # with pipeline stages, one batch per stage
        ("0.33", False, 3, None, 192),
        ("0.33", True, 1, 5, 320),  # an explicit count wins
    ],
)
def test_tokens_in_flight(version: str, async_scheduling: bool, pp: int, batches: int | None, tokens: int) -> None:
    assert (
        in_flight_tokens(version, 64, async_scheduling=async_scheduling, pipeline_parallel_size=pp, batches=batches)
        == tokens
    )


def test_per_group_and_sum_formulas_count_pages_as_vllm_does() -> None:
    # max_model_len 1024: the full group holds 64 pages (6,400 bytes); the sliding group holds
    # cdiv(min(31 + in-flight, 1024), 16) + 1 pages.
    per_group = size_kv(
        LAYOUT, available_kv_bytes=110 * 710 + 50, max_model_len=1024, max_num_batched_tokens=64, vllm_version="0.33"
    )
    assert per_group.group_pages == (("full", 64), ("sliding", 7))  # 31 + 64 = 95 tokens: 6 pages + 1
    assert (per_group.blocks_per_request, per_group.num_blocks, per_group.formula) == (71, 710, "per_group")
    assert per_group.max_concurrency == 10.0 and per_group.kv_cache_tokens == 10_240
    summed = size_kv(
        LAYOUT, available_kv_bytes=110 * 650, max_model_len=1024, max_num_batched_tokens=64, vllm_version="0.30"
    )
    assert (summed.blocks_per_request, summed.formula) == (65, "sum")  # cdiv(6,400 + 70, 100)
    assert summed.in_flight_tokens == 64 and summed.max_concurrency == 10.0


def test_an_unknown_formula_is_refused_naming_the_choices() -> None:
    with pytest.raises(InputError) as caught:
        size_kv(
            LAYOUT, available_kv_bytes=1, max_model_len=16, max_num_batched_tokens=16, vllm_version="0.33", formula="x"
        )
    assert caught.value.key == "--kv-formula" and caught.value.fix == "use one of sum, per_group"
    assert caught.value.message == "unknown KV sizing formula 'x'" and caught.value.value == "x"


def test_one_pipeline_stage_and_sync_scheduling_is_the_default_of_one_batch() -> None:
    assert in_flight_tokens("0.33", 64, async_scheduling=False) == 64
    sized = size_kv(LAYOUT, available_kv_bytes=1100, max_model_len=1024, max_num_batched_tokens=64, vllm_version="0.33")
    assert (sized.available_kv_bytes, sized.max_model_len, sized.in_flight_tokens) == (1100, 1024, 64)


@pytest.mark.parametrize(
    ("kwargs", "blocks"),
    [
        ({"vllm_version": "0.33"}, 710),  # 10 requests of 71 blocks
        ({"vllm_version": "0.33", "async_scheduling": True}, 750),  # 75 blocks each (sliding: 11 pages)
        ({"vllm_version": "0.33", "in_flight_batches": 3}, 790),  # 79 blocks each (sliding: 15 pages)
        ({"vllm_version": "0.30"}, 650),  # the sum formula: 65 blocks each
        ({"vllm_version": "0.33", "formula": "sum"}, 650),
    ],
)
def test_the_blocks_a_reported_token_count_implies(kwargs: dict[str, object], blocks: int) -> None:
    assert (
        blocks_from_reported(LAYOUT, kv_cache_tokens=10_240, max_model_len=1024, max_num_batched_tokens=64, **kwargs)
        == blocks
    )  # type: ignore[arg-type]
