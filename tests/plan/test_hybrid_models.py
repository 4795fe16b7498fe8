"""Hybrid attention (sliding-window and full layers): sized as vLLM's hybrid allocator does.

The recorded boots in tests/cases/plan/ (record_cpu_boots.py) are the proof: test_ordinary_models
checks every one of them exactly; here, the hybrid ones are shown to need the hybrid model (a
full-attention sizing of the same config misses), and the grouping rules are checked at their
boundaries.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flashspark.bootlog import parse_boot_log
from flashspark.cli.main import main
from flashspark.errors import RecipeError
from flashspark.plan.hf_layouts import HFAttentionConfig, attention_layout, kernel_block, split_into_groups

CASES_DIR = Path(__file__).parents[1] / "cases" / "plan"
HYBRID = sorted(
    p
    for p in CASES_DIR.iterdir()
    if (p / "boot.log").is_file() and json.loads((p / "config.json").read_text()).get("sliding_window")
)


def plan(*args: str) -> dict:
    result = CliRunner().invoke(main, ["plan", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_recorded_boots_cover_mixed_and_all_sliding_models() -> None:
    kinds = {tuple(HFAttentionConfig.from_file(c / "config.json").layer_kinds()) for c in HYBRID}
    assert any("full_attention" in k and "sliding_attention" in k for k in kinds)
    assert any(set(k) == {"sliding_attention"} for k in kinds)
    assert len(HYBRID) >= 4


@pytest.mark.parametrize("case", HYBRID, ids=lambda p: p.name)
def test_a_full_attention_sizing_of_a_hybrid_boot_would_be_wrong(case: Path, tmp_path: Path) -> None:
    logged = parse_boot_log((case / "boot.log").read_text())
    data = json.loads((case / "config.json").read_text())
    data.pop("sliding_window")
    data.pop("layer_types", None)
    data["model_type"] = "llama"  # no transformers default layer types either
    flat = tmp_path / "config.json"
    flat.write_text(json.dumps(data))
    args = ["--profile", "local-cpu", "--boot-log", str(case / "boot.log")]
    assert plan(*args, "--hf-config", str(case / "config.json"))["kv_cache_tokens"] == logged.kv_cache_tokens
    assert plan(*args, "--hf-config", str(flat))["kv_cache_tokens"] != logged.kv_cache_tokens


def test_a_gemma2_config_without_layer_types_alternates_as_transformers_fills_it(tmp_path: Path) -> None:
    case = CASES_DIR / "gemma2-l4-alternating-w256-bs32"
    data = json.loads((case / "config.json").read_text())
    assert data.pop("layer_types") == ["sliding_attention", "full_attention"] * 2
    old = tmp_path / "config.json"
    old.write_text(json.dumps(data))
    args = ["--profile", "local-cpu", "--boot-log", str(case / "boot.log")]
    assert (
        plan(*args, "--hf-config", str(old))["kv_cache_tokens"]
        == parse_boot_log((case / "boot.log").read_text()).kv_cache_tokens
    )


@pytest.mark.parametrize(
    ("counts", "groups"),
    [
        ({"full_attention": 2, "sliding_attention": 2}, [2, 2]),
        # 3 < 1.5 x 2 is false: groups of 2, the sliding kind split in two (one padded)
        ({"full_attention": 2, "sliding_attention": 3}, [2, 2, 1]),
        # 13 < 1.5 x 12: one group per kind, padded to 13 (gpt-oss-20b + eagle)
        ({"sliding_attention": 12, "full_attention": 13}, [12, 13]),
        # Gemma-3: 5 sliding : 1 full
        ({"sliding_attention": 5, "full_attention": 1}, [1, 1, 1, 1, 1, 1]),
        ({"sliding_attention": 4}, [4]),
    ],
)
def test_layers_split_into_groups_as_vllm_splits_them(counts: dict[str, int], groups: list[int]) -> None:
    assert [layers for _, layers in split_into_groups(counts)] == groups


def test_sliding_layers_take_a_block_the_kernel_runs() -> None:
    assert kernel_block(16, 32) == 32  # smaller than the kernel: its smallest block
    assert kernel_block(32, 32) == 32
    assert kernel_block(48, 32) == 32  # the largest multiple within the page
    assert kernel_block(64, 32) == 64
    assert kernel_block(16, None) == 16


def test_mixed_pages_are_unified_and_a_block_costs_the_largest_group() -> None:
    config = HFAttentionConfig.from_file(CASES_DIR / "llama-l5-sw3full2-w1024" / "config.json")
    layout = attention_layout(config, block_size=16, kv_cache_dtype="float32", platform="cpu")
    per_token = 2 * 64 * 2 * 4
    # 2 full + 3 sliding: groups of 2, so the sliding layers make two groups (one padded); --block-size 16
    # becomes 32 everywhere: sliding layers take the CPU kernel's 32 and full pages are unified to match.
    groups = sorted((g.window or 0, g.layers, g.block_tokens) for g in layout.groups)
    assert groups == [(0, 2, 32), (1024, 1, 32), (1024, 2, 32)]
    assert layout.bytes_per_block == 2 * 32 * per_token
    on_cuda = attention_layout(config, block_size=16, kv_cache_dtype="float32", platform="cuda")
    assert {g.block_tokens for g in on_cuda.groups} == {16}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"layer_types": ["sliding_attention", "linear_attention"]}, "linear_attention"),
        ({"layer_types": ["sliding_attention"]}, "1 layer_types for 2 layers"),
        ({"layer_types": ["sliding_attention", "full_attention"], "sliding_window": None}, "without a sliding_window"),
    ],
)
def test_configs_it_cannot_size_are_refused_with_the_field(tmp_path: Path, change: dict, message: str) -> None:
    base = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**base, "sliding_window": 128, **change}))
    with pytest.raises(RecipeError, match=message) as caught:
        HFAttentionConfig.from_file(path)
    assert caught.value.where is not None and "config.json" in caught.value.where


def test_a_window_the_model_does_not_use_is_full_attention(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    base = {"model_type": "qwen2", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256}
    path.write_text(json.dumps({**base, "sliding_window": 4096, "use_sliding_window": False}))
    assert HFAttentionConfig.from_file(path).layer_kinds() == ["full_attention"] * 2
    path.write_text(json.dumps({**base, "sliding_window": 0}))
    assert HFAttentionConfig.from_file(path).layer_kinds() == ["full_attention"] * 2


def test_without_a_profile_an_ordinary_model_keeps_its_own_kv_dtype_and_block() -> None:
    """The default profile is DeepSeek-V4 (nvfp4_ds_mla, block 256, 1M): none of it applies to a Llama."""
    config = CASES_DIR / "llama-l6-kv2-hd32-bs32" / "config.json"  # bf16 checkpoint, 8192 positions
    payload = plan("--hf-config", str(config), "--available-kv-gib", "1")
    values = {q["name"]: (q["value"], q["source"]) for q in payload["quantities"]}
    assert values["kv_cache_dtype"] == ("bfloat16", "vLLM default")
    assert values["block_size"] == (16, "vLLM default")
    assert values["max_model_len"] == (8192, "vLLM default")
    assert values["max_num_batched_tokens"] == (8192, "vLLM default")
    # Sized as the upstream vLLM the recorded boots prove, not the DSpark image's 0.21 fork.
    assert (payload["vllm_version"], payload["formula"]) == ("0.32", "per_group")
    # No memory budget was used (the pool was given), and the model takes 8,192 positions at most.
    knobs = {(row["knob"], row["value"]) for row in payload["sensitivity"]}
    assert not any(knob == "gpu_memory_utilization" for knob, _ in knobs)
    assert {v for k, v in knobs if k == "max_model_len"} == {8192}
    # A named recipe is the caller's choice: its engine settings apply (local-cpu: float32, 8192).
    named = plan("--profile", "local-cpu", "--hf-config", str(config), "--available-kv-gib", "1")
    assert {q["name"]: q["value"] for q in named["quantities"]}["kv_cache_dtype"] == "float32"


def test_a_deepseek_only_kv_dtype_on_an_ordinary_model_says_how_to_fix_it() -> None:
    config = CASES_DIR / "llama-l6-kv2-hd32-bs32" / "config.json"
    result = CliRunner().invoke(
        main, ["plan", "--profile", "agent-1m", "--hf-config", str(config), "--available-kv-gib", "1"]
    )
    assert result.exit_code == 2
    assert "nvfp4_ds_mla" in result.output and "--kv-cache-dtype" in result.output


def test_the_null_block_and_every_full_group_count_in_a_workload_fit() -> None:
    from flashspark.plan.layouts import CacheGroup, KVLayout
    from flashspark.plan.workload import fit_workload, parse_workload

    one = KVLayout("m", "float32", 16, (CacheGroup("full", page_bytes=64, block_tokens=16),), bytes_per_block=64)

    def fit(layout: KVLayout, spec: str) -> str:
        return fit_workload(
            layout, parse_workload(spec), pool_blocks=10, max_model_len=4096, max_num_seqs=None,
            prefill_chunk_tokens=16,
        ).verdict  # fmt: skip

    assert fit(one, "1x144") == "at the limit"  # 9 blocks + the null block = the whole pool
    assert fit(one, "1x145") == "does not fit"  # a 10th block: only the null block is left
    two = KVLayout(
        "m", "float32", 16,
        (CacheGroup("full[0]", 64, 16), CacheGroup("full[1]", 64, 16)),
        bytes_per_block=64,
    )  # fmt: skip
    assert fit(two, "1x64") == "at the limit"  # 4 + 4 blocks + null = 9 of 10
    assert fit(two, "1x80") == "does not fit"  # 5 + 5 + null = 11


BASE = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"num_hidden_layers": 2, "hidden_size": 256}, "lacks 'num_attention_heads'"),
        ({**BASE, "num_attention_heads": "four"}, "num_attention_heads is 'four', not a whole number"),
        ({**BASE, "num_attention_heads": 0}, "num_attention_heads is 0"),
        ({**BASE, "num_hidden_layers": -3}, "num_hidden_layers is -3"),
        # a hostile size must be refused before it sizes a list of a trillion layers
        ({**BASE, "num_hidden_layers": 10**12}, "num_hidden_layers is 1000000000000, not a whole number from 1 to"),
        ({**BASE, "num_hidden_layers": True}, "num_hidden_layers is True"),
        ({**BASE, "sliding_window": "abc"}, "sliding_window is 'abc'"),
        ({**BASE, "sliding_window": -5}, "sliding_window is -5"),
        ({**BASE, "max_position_embeddings": "x"}, "max_position_embeddings is 'x'"),
        ({**BASE, "num_key_value_heads": -2}, "num_key_value_heads is -2"),
        ({**BASE, "hidden_size": 2}, "leaves no head dimension"),
        ({**BASE, "sliding_window": 64, "layer_types": "sliding_attention"}, "layer_types is not a list"),
        ({**BASE, "text_config": 5}, "text_config is not an object"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_a_config_without_usable_attention_sizes_is_named(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecipeError, match=message):
        HFAttentionConfig.from_file(path)


@pytest.mark.parametrize(
    ("model_type", "extra", "kinds"),
    [
        # transformers' Gemma2Config: sliding on even indices ("sliding_attention" if (i + 1) % 2 else full)
        ("gemma2", {}, "SFSFS"),
        # Gemma3TextConfig: every sliding_window_pattern-th layer is full (default 6)
        ("gemma3_text", {}, "SSSSSFS"),
        ("gemma3_text", {"sliding_window_pattern": 3}, "SSFSSFS"),
    ],
)
def test_older_gemma_configs_get_the_layer_types_transformers_fills_in(
    tmp_path: Path, model_type: str, extra: dict, kinds: str
) -> None:
    path = tmp_path / "config.json"
    base = {"num_attention_heads": 4, "hidden_size": 256, "sliding_window": 512, "model_type": model_type}
    path.write_text(json.dumps({**base, "num_hidden_layers": len(kinds), **extra}))
    got = HFAttentionConfig.from_file(path).layer_kinds()
    assert "".join("S" if k == "sliding_attention" else "F" for k in got) == kinds


@pytest.mark.parametrize("option", ["--available-kv-gib", "--total-memory-gib", "--weights-gib"])
def test_a_memory_figure_past_any_machine_is_refused_not_overflowed(option: str) -> None:
    config = CASES_DIR / "llama-l6-kv2-hd32-bs32" / "config.json"
    result = CliRunner().invoke(main, ["plan", "--hf-config", str(config), option, "1e300"])
    assert result.exit_code == 2 and option in result.output and "range" in result.output
    assert "OverflowError" not in result.output
