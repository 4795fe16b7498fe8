"""KV cache layouts: the cache groups vLLM builds for a model, with their page sizes.

Two kinds of model are covered:
- a model described by a Hugging Face `config.json`, full attention, sliding window or
  both mixed (`hf_layouts.py`);
- DeepSeek-V4-Flash(-DSpark), whose hybrid attention gives vLLM one full-MLA
  group and several sliding-window-type groups (raw windows, compressor
  states), packed into one pool of stripes (tech.md §2-3).

A layout is pure data; `sizing.py` turns it into blocks, tokens and concurrency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flashspark.errors import RecipeError
from flashspark.plan.facts import DEEPSEEK_V4, DEEPSEEK_V4_BLOCK_SIZE, DeepSeekV4Facts


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class CacheGroup:
    """One vLLM KV cache group: `layers` layer caches sharing a block table."""

    name: str
    page_bytes: int  # one page of this group, all its layers together
    block_tokens: int  # token positions one page covers
    window: int | None = None  # sliding-window-type groups: tokens kept behind the cursor
    layers: int = 1

    def pages_for(self, tokens: int, in_flight_tokens: int = 0) -> int:
        """Pages a request holds: all its tokens (full) or a window plus what is in flight."""
        if self.window is None:
            return cdiv(tokens, self.block_tokens)
        held = min(self.window - 1 + in_flight_tokens, tokens)
        return cdiv(held, self.block_tokens) + 1

    def max_memory_bytes(self, max_model_len: int, in_flight_tokens: int) -> int:
        """vLLM's `max_memory_usage_bytes` for one request at max_model_len."""
        if self.window is None:
            return self.pages_for(max_model_len) * self.page_bytes
        return self.pages_for(max_model_len, in_flight_tokens) * self.page_bytes


@dataclass(frozen=True)
class KVLayout:
    """The groups of one model's KV cache and what one pool block costs."""

    model: str
    kv_cache_dtype: str
    block_size: int
    groups: tuple[CacheGroup, ...]
    bytes_per_block: int  # bytes one block id costs in the pool (a packed stripe)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def page0_bytes(self) -> int:
        """Group 0's page: the unit vLLM <= 0.26 divides per-request memory by."""
        return self.groups[0].page_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kv_cache_dtype": self.kv_cache_dtype,
            "block_size": self.block_size,
            "bytes_per_block": self.bytes_per_block,
            "groups": [
                {
                    "name": g.name,
                    "layers": g.layers,
                    "page_bytes": g.page_bytes,
                    "block_tokens": g.block_tokens,
                    "window": g.window,
                }
                for g in self.groups
            ],
            "notes": list(self.notes),
        }


# --- DeepSeek-V4-Flash --------------------------------------------------------------------


V4_ENVELOPE_DTYPES = {"fp8", "fp8_e4m3", "fp8_ds_mla", "nvfp4_ds_mla", "auto"}


def deepseek_v4_layout(
    *,
    kv_cache_dtype: str = "nvfp4_ds_mla",
    block_size: int = DEEPSEEK_V4_BLOCK_SIZE,
    facts: DeepSeekV4Facts | None = None,
) -> KVLayout:
    """DeepSeek-V4-Flash-DSpark's groups with the 584-byte envelope (fp8_ds_mla, Stage-C nvfp4_ds_mla)."""
    f = facts or DEEPSEEK_V4
    if kv_cache_dtype not in V4_ENVELOPE_DTYPES:
        raise RecipeError(
            f"no DeepSeek-V4 KV layout for kv_cache_dtype {kv_cache_dtype!r}",
            key="kv_cache_dtype",
            value=kv_cache_dtype,
            fix="use fp8 or nvfp4_ds_mla (on DGX Spark both are the 584-byte envelope)",
        )
    if block_size != 256:
        raise RecipeError(
            "DeepSeek-V4's sparse MLA backend supports block size 256 only",
            key="BLOCK_SIZE",
            value=block_size,
            fix="set BLOCK_SIZE=256",
        )

    def align(raw: int) -> int:
        return cdiv(raw, f.page_alignment) * f.page_alignment

    c4a_page = align(block_size // 4 * f.entry_bytes)  # 64 entries per 256 tokens
    indexer_page = align(block_size // 4 * f.indexer_key_bytes)
    c128a_page = align(block_size // 128 * f.entry_bytes)
    swa_block, c4a_state_block, c128a_state_block = 64, 4, 8
    swa_page = align(swa_block * f.entry_bytes)
    buckets = sorted({c4a_page, indexer_page, c128a_page, swa_page})

    def bucket(raw: int) -> int:
        # Pages that are not a KV page size are padded up to the next one, so
        # every group fits the same physical stripes.
        aligned = align(raw)
        return next(b for b in buckets if b >= aligned)

    c4a_state_page = bucket(c4a_state_block * f.c4a_state_bytes)
    indexer_state_page = bucket(c4a_state_block * f.indexer_state_bytes)
    c128a_state_page = bucket(c128a_state_block * f.c128a_state_bytes)

    full = CacheGroup(
        "full_mla (c4a + indexer + c128a)",
        page_bytes=f.c4a_layers * (c4a_page + indexer_page) + f.c128a_layers * c128a_page,
        block_tokens=block_size,
        layers=2 * f.c4a_layers + f.c128a_layers,
    )
    groups = [full]
    remaining = f.swa_layers
    index = 0
    while remaining > 0:
        count = min(remaining, f.layers_per_tuple)
        groups.append(
            CacheGroup(
                f"sliding_window_kv[{index}]",
                page_bytes=count * swa_page,
                block_tokens=swa_block,
                window=f.sliding_window,
                layers=count,
            )
        )
        remaining -= count
        index += 1
    groups.append(
        CacheGroup(
            "c4a_compressor_state",
            page_bytes=f.c4a_layers * (c4a_state_page + indexer_state_page),
            block_tokens=c4a_state_block,
            window=8,
            layers=2 * f.c4a_layers,
        )
    )
    groups.append(
        CacheGroup(
            "c128a_compressor_state",
            page_bytes=f.c128a_layers * c128a_state_page,
            block_tokens=c128a_state_block,
            window=128,
            layers=f.c128a_layers,
        )
    )
    # One pool block is a stripe holding, per page size, as many pages as the
    # fullest group of that size needs (tech.md §3.2, "packed layout").
    slots = {
        swa_page: max(f.layers_per_tuple, f.c4a_layers, f.c128a_layers),
        indexer_page: f.c4a_layers,
        c128a_page: f.c128a_layers,
    }
    if c4a_page not in slots:
        slots[c4a_page] = f.c4a_layers
    bytes_per_block = sum(size * count for size, count in slots.items())
    return KVLayout(
        model="deepseek-v4-flash-dspark",
        kv_cache_dtype=kv_cache_dtype,
        block_size=block_size,
        groups=tuple(groups),
        bytes_per_block=bytes_per_block,
        notes=(
            f"{f.entry_bytes}-byte entries: nvfp4_ds_mla (Stage C) is budgeted like fp8_ds_mla on DGX Spark",
            f"pages {c4a_page:,} / {indexer_page:,} / {c128a_page:,} B (c4a / indexer / c128a per 256 tokens), "
            f"aligned to {f.page_alignment} B",
            f"{f.swa_layers} sliding windows of {f.sliding_window} tokens (43 main + {f.draft_layers} draft layers)",
        ),
    )
