"""Decode against the memory roofline, and the draft length per concurrency.

The roofline's bytes are checked against numbers worked by hand (a checkpoint written here with
known shapes, the planner's DeepSeek-V4 bytes); the draft advice against cells made from a known
step-time law, whose best k is worked out in the test's comments.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from flashspark.bench.efficiency import (
    Roofline,
    cell_efficiency,
    checkpoint_parameters,
    recommend_k,
    roofline_for,
)
from flashspark.bench.results import BenchResults
from flashspark.bench.stats import CellSummary
from flashspark.errors import RecipeError
from flashspark.plan.speed import SpeedAssumptions, step_weights_gb
from flashspark.recipe import resolve_recipe
from flashspark.report.checkpoint import markdown


def write_checkpoint(folder: Path, shapes: dict[str, list[int]], *, layers: int = 2, kv_heads: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = {name: {"dtype": "BF16", "shape": shape, "data_offsets": [0, 0]} for name, shape in shapes.items()}
    header["__metadata__"] = {"format": "pt"}  # type: ignore[dict-item]
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    config = {
        "model_type": "llama",
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": kv_heads,
        "hidden_size": 256,
        "torch_dtype": "bfloat16",
        "max_position_embeddings": 4096,
    }
    (folder / "config.json").write_text(json.dumps(config))


def test_parameters_are_counted_from_the_safetensors_header(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "m", {"a": [1000, 64], "b": [64], "c": [3, 5, 7]})
    assert checkpoint_parameters(tmp_path / "m") == 64_000 + 64 + 105


@pytest.mark.parametrize(
    "content",
    [
        struct.pack("<Q", 1 << 40) + b"{}",  # a header length past any real one
        b"\x01\x02",  # shorter than the length field
        struct.pack("<Q", 2) + b"[]",  # not an object
        struct.pack("<Q", 23) + b'{"w": {"shape": ["x"]}}',  # a shape that is not numbers
    ],
)
def test_a_file_that_is_not_safetensors_is_refused_by_name(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(RecipeError, match=r"model\.safetensors has no safetensors header"):
        checkpoint_parameters(tmp_path)


def test_a_hand_made_roofline_that_reads_nothing_has_no_ceiling() -> None:
    zero = Roofline(
        bandwidth_gb_s=1.0, bandwidth_source="", weights_gb={1: 0.0}, kv_gb_per_context_token=0.0,
        bytes_source="", draft="none",
    )  # fmt: skip
    assert zero.ceiling(1, 1.0, 100) is None


def test_a_local_checkpoint_is_sized_at_the_serving_dtype(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flashspark.bench.efficiency as efficiency

    monkeypatch.setattr(efficiency, "memory_bandwidth", lambda: 10.0)
    write_checkpoint(tmp_path / "m", {"w": [1000, 1000]}, layers=2, kv_heads=2)
    recipe = resolve_recipe(profile="local-cpu").recipe
    boot = {"evidence": {"args": {"model": str(tmp_path / "m"), "dtype": "float32"}}}
    roofline, why = roofline_for(recipe, boot, [1, 8])
    assert why == "" and roofline is not None
    assert roofline.weights_gb == {1: 0.004, 8: 0.004}  # 1,000,000 parameters x 4 bytes
    # K and V, 2 layers x 2 KV heads x head_dim 64 (256 / 4 heads), 4 bytes each
    assert roofline.kv_gb_per_context_token == pytest.approx(2 * 2 * 2 * 64 * 4 / 1e9)
    assert roofline.bandwidth_gb_s == 10.0 and roofline.draft == "ngram"
    # 8 streams, 2 tokens a step, 100 tokens of context: 8 x 2 x 10 / (0.004 + 8 x 100 x 2.048e-6) GB/s
    assert roofline.ceiling(8, 2.0, 100) == pytest.approx(160 / (0.004 + 800 * 2.048e-6))
    assert roofline.ceiling(3, 2.0, 100) is None  # a concurrency the roofline was not sized for


def test_without_the_checkpoint_here_there_is_no_roofline_and_it_says_why() -> None:
    recipe = resolve_recipe(profile="local-cpu").recipe
    roofline, why = roofline_for(recipe, {"evidence": {"args": {"model": "/nowhere/at/all"}}}, [1])
    assert roofline is None and "not on this machine" in why
    assert roofline_for(recipe, None, [1])[0] is None


def test_deepseek_profiles_take_the_planner_s_bytes_which_grow_with_the_batch() -> None:
    recipe = resolve_recipe(profile="agent-1m", strict=False).recipe  # a DSpark profile, k = 5
    roofline, _ = roofline_for(recipe, None, [1, 4])
    assert roofline is not None and roofline.bandwidth_gb_s == 273.0
    a = SpeedAssumptions()
    assert roofline.weights_gb[1] == round(step_weights_gb(6, True, a), 4)
    assert roofline.weights_gb[4] == round(step_weights_gb(24, True, a), 4) > roofline.weights_gb[1]


def cell(level: int, rates: list[float], per_stream: float, name: str = "") -> CellSummary:
    return CellSummary(
        cell=name or f"static-c{level}-r0",
        level=level,
        requests=level,
        completed=level,
        total_input_tokens=100 * level,
        total_output_tokens=64 * level,
        per_stream_decode_tokens_per_s_mean=per_stream,
        spec_decode_acceptance_length=1 + sum(rates),
        spec_decode_per_position_acceptance_rates=rates,
    )


RATES = [0.9, 0.5, 0.1, 0.05, 0.01]


def lawful(level: int) -> CellSummary:
    """A cell whose step takes 10 ms + 1 ms per batch token (n = level x 6 at k = 5)."""
    step_s = 0.010 + 0.001 * level * 6
    return cell(level, RATES, (1 + sum(RATES)) / step_s)


def test_the_best_draft_length_follows_acceptance_and_the_fitted_step_cost() -> None:
    fit, why = recommend_k([lawful(1), lawful(16)], "ngram")
    assert why == "" and fit is not None
    assert fit.step_fixed_ms == pytest.approx(10.0) and fit.step_per_token_ms == pytest.approx(1.0)
    one, sixteen = fit.advice
    # One stream: tokens/step 1, 1.9, 2.4, 2.5, 2.55, 2.56 over 11..16 ms: k = 2 (184.6/s) beats k = 5 (160/s).
    assert (one.concurrency, one.recommended_k, one.speedup) == (1, 2, pytest.approx(184.615 / 160.0, abs=1e-3))
    assert one.tokens_per_step == {0: 1.0, 1: 1.9, 2: 2.4, 3: 2.5, 4: 2.55, 5: 2.56}
    # Sixteen: a step costs 10 + 16 (1 + k) ms: k = 1 (1.9 / 42 ms) beats k = 0 (1 / 26 ms) and k = 2 (2.4 / 58 ms).
    assert (sixteen.concurrency, sixteen.recommended_k) == (16, 1)
    assert "n-gram drafting costs nothing" in fit.note
    other, _ = recommend_k([lawful(1), lawful(16)], "dspark")
    assert other is not None and "draft's own cost per position is not in the fit" in other.note


def test_one_concurrency_or_no_drafting_gives_no_advice_and_says_why() -> None:
    assert recommend_k([lawful(4), lawful(4)], "ngram") == (
        None,
        "one concurrency only: the step-time fit needs cells at two or more",
    )
    plain = CellSummary(cell="static-c1-r0", level=1, per_stream_decode_tokens_per_s_mean=10.0)
    fit, why = recommend_k([plain], "none")
    assert fit is None and "per-position acceptance" in why


def test_a_cell_s_efficiency_is_its_decode_over_its_ceiling() -> None:
    roofline = Roofline(
        bandwidth_gb_s=10.0,
        bandwidth_source="test",
        weights_gb={4: 1.0},
        kv_gb_per_context_token=0.001,
        bytes_source="test",
        draft="ngram",
    )
    # Context = 100 prompt + 32 (half the reply); ceiling = 4 x 2.56 x 10 / (1 + 4 x 132 x 0.001)
    row = cell_efficiency(cell(4, RATES, 5.0), roofline)
    assert row is not None and row.context_tokens == 132.0
    assert row.ceiling_tokens_per_s == pytest.approx(4 * 2.56 * 10 / 1.528, abs=0.05)
    assert row.efficiency == pytest.approx(20.0 / (4 * 2.56 * 10 / 1.528), abs=1e-4)
    assert cell_efficiency(cell(2, RATES, 5.0), roofline) is None  # not sized for two streams


def test_the_report_shows_both_and_keeps_a_crafted_source_on_one_line() -> None:
    roofline = Roofline(
        bandwidth_gb_s=10.0,
        bandwidth_source="measured\n## Injected heading",
        weights_gb={1: 1.0, 16: 1.0},
        kv_gb_per_context_token=0.0,
        bytes_source="x | y",
        draft="ngram",
    )
    results = BenchResults(roofline=roofline, cells=[lawful(1), lawful(16)])
    text = markdown(results, results.cells, [])
    section = text.split("## Efficiency")[1].split("## Client self-check")[0]
    assert "\n## Injected" not in text and "measured ## Injected heading" in section
    assert (
        "| static-c1-r0 | 1 |" in section
        and "| 1 | 5 | 2 | 1.00 / 1.90 / 2.40 / 2.50 / 2.55 / 2.56 | 1.15x |" in section
    )
    bare = markdown(BenchResults(roofline_note="no recipe describes the server", cells=[lawful(1)]), [lawful(1)], [])
    assert "No roofline: no recipe describes the server." in bare and "No draft-length advice: one concurrency" in bare


def test_a_noisy_run_whose_steps_got_cheaper_with_more_tokens_is_fitted_as_free_tokens() -> None:
    # 1 stream at 20 ms a step, 16 at 10 ms: the slope would be negative; held at 0, a step costs the mean, 15 ms.
    fit, _ = recommend_k([cell(1, RATES, 2.56 / 0.020), cell(16, RATES, 2.56 / 0.010)], "ngram")
    assert fit is not None and fit.step_per_token_ms == 0.0 and fit.step_fixed_ms == pytest.approx(15.0)
    assert [a.recommended_k for a in fit.advice] == [5, 5]  # tokens cost nothing: the longest draft wins
