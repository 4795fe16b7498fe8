"""The decode speed ceiling: bytes one decode step reads per rank, over the node's memory bandwidth.

Single stream, 100 % bandwidth efficiency (a ceiling, not a forecast), per
tech.md §7.2: a plain step reads the dense weights, 6 routed experts per MoE
layer and the LM head; a DSpark verify step of n = k + 1 tokens reads every
distinct expert those tokens pick, E·(1 - (1 - 6/E)^n) per layer under
independent routing (an upper bound), plus the draft module; it yields τ =
mean acceptance length tokens. KV reads grow with the context.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashspark.plan.facts import DEEPSEEK_V4, DeepSeekV4Facts

GB = 1e9


@dataclass(frozen=True)
class SpeedAssumptions:
    bandwidth_gb_s: float = 273.0  # DGX Spark LPDDR5x [S]
    dense_gb_per_rank: float = 3.2  # attention, compressors, indexers, shared experts (TP 2, some replicated) [D]
    lm_head_gb_per_rank: float = 0.53  # bf16 129,280 x 4096 split over 2 ranks [D]
    expert_mb_per_rank: float = 6.7  # one FP4 routed expert (13.4 MB) split over 2 ranks [D]
    moe_layers: int = 43
    routed_experts: int = 256
    experts_per_token: int = 6
    draft_gb_per_rank: float = 1.1  # DSpark's 3 draft MoE layers + heads, middle of 0.6-1.6 [D]
    model: DeepSeekV4Facts = DEEPSEEK_V4


@dataclass(frozen=True)
class SpeedCeiling:
    context_tokens: int
    num_speculative_tokens: int
    mean_acceptance_length: float
    distinct_experts_per_layer: float
    weights_gb_per_step: float
    kv_gb_per_step: float
    step_ms: float
    tokens_per_s: float
    no_spec_tokens_per_s: float


def kv_read_gb(context: int, a: SpeedAssumptions) -> float:
    # KV bytes read per decoded token, fp8 envelope: the c4a indexer scans L/4 keys, c128a
    # reads L/128 entries, c4a reads its top-512 entries, every layer its sliding window.
    m = a.model
    per_token = m.c4a_layers * m.indexer_key_bytes / 4 + m.c128a_layers * m.entry_bytes / 128
    fixed = m.c4a_layers * 512 * m.entry_bytes + m.swa_layers * m.sliding_window * m.entry_bytes
    return (context * per_token + fixed) / GB


def distinct_experts(tokens: int, a: SpeedAssumptions) -> float:
    e = a.routed_experts
    return float(e * (1 - (1 - a.experts_per_token / e) ** tokens))


def step_weights_gb(tokens: int, draft: bool, a: SpeedAssumptions) -> float:
    """Weight bytes one step reads per rank when it carries `tokens` tokens (every distinct expert they pick)."""
    experts = distinct_experts(tokens, a) if tokens > 1 else float(a.experts_per_token)
    weights = a.dense_gb_per_rank + experts * a.moe_layers * a.expert_mb_per_rank / 1000 + a.lm_head_gb_per_rank
    return weights + (a.draft_gb_per_rank if draft else 0.0)


def speed_ceiling(
    *,
    context_tokens: int,
    num_speculative_tokens: int,
    mean_acceptance_length: float,
    assumptions: SpeedAssumptions | None = None,
) -> SpeedCeiling:
    a = assumptions or SpeedAssumptions()
    kv = kv_read_gb(context_tokens, a)

    def step_gb(tokens: int, draft: bool) -> float:
        return step_weights_gb(tokens, draft, a)

    spec = num_speculative_tokens > 0
    tokens = num_speculative_tokens + 1 if spec else 1
    weights = step_gb(tokens, spec)
    step_s = (weights + kv) * GB / (a.bandwidth_gb_s * GB)
    tau = mean_acceptance_length if spec else 1.0
    plain_s = (step_gb(1, False) + kv) / a.bandwidth_gb_s
    return SpeedCeiling(
        context_tokens=context_tokens,
        num_speculative_tokens=num_speculative_tokens,
        mean_acceptance_length=tau,
        distinct_experts_per_layer=distinct_experts(tokens, a) if spec else float(a.experts_per_token),
        weights_gb_per_step=weights,
        kv_gb_per_step=kv,
        step_ms=step_s * 1000,
        tokens_per_s=tau / step_s,
        no_spec_tokens_per_s=1 / plain_s,
    )
