"""Read vLLM's `/metrics`: snapshots, deltas, and the speculative-decoding math.

Counters are lifetime totals, so every number FlashSpark reports comes from
the delta between two snapshots around its own traffic. The formulas are
vLLM's own (`SpecDecodingLogging`): acceptance = accepted / drafted tokens,
mean acceptance length = 1 + accepted / drafts (the bonus token included),
per-position rate_i = accepted at position i / drafts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

DRAFTS = "vllm:spec_decode_num_drafts"
DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
ACCEPTED = "vllm:spec_decode_num_accepted_tokens"
ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"
GENERATION_TOKENS = "vllm:generation_tokens"
PREFIX_QUERIES = "vllm:prefix_cache_queries"
PREFIX_HITS = "vllm:prefix_cache_hits"
PREEMPTIONS = "vllm:num_preemptions"
PROMPT_TOKENS = "vllm:prompt_tokens"
KV_USAGE = "vllm:kv_cache_usage_perc"
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
E2E = "vllm:e2e_request_latency_seconds"
QUEUE = "vllm:request_queue_time_seconds"


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: cumulative counts per upper bound (`le`), summed over label sets."""

    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    total: float = 0.0

    def minus(self, earlier: Histogram) -> Histogram:
        return Histogram(
            buckets={le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            count=self.count - earlier.count,
            total=self.total - earlier.total,
        )

    def quantile(self, q: float) -> float | None:
        """Prometheus's `histogram_quantile`: linear within the bucket that holds rank q·count.

        None without observations. A rank in the +Inf bucket answers the highest finite bound
        (the histogram cannot say more), as Prometheus does.
        """
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        bounds = sorted(self.buckets)
        for upper in bounds:
            cumulative = self.buckets[upper]
            if cumulative >= rank:
                if upper == float("inf"):
                    return lower
                inside = cumulative - below
                return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = upper, cumulative
        return lower

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count > 0 else None


@dataclass(frozen=True)
class MetricsSnapshot:
    """Counter totals (summed over engines and models) and gauges at one moment."""

    counters: dict[str, float] = field(default_factory=dict)
    per_position: dict[int, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)

    def counter(self, name: str) -> float:
        return self.counters.get(name, 0.0)

    def minus(self, earlier: MetricsSnapshot) -> MetricsDelta:
        names = set(self.counters) | set(earlier.counters)
        positions = set(self.per_position) | set(earlier.per_position)
        return MetricsDelta(
            counters={n: self.counter(n) - earlier.counter(n) for n in names},
            per_position={
                p: self.per_position.get(p, 0.0) - earlier.per_position.get(p, 0.0) for p in sorted(positions)
            },
            histograms={
                name: histogram.minus(earlier.histograms.get(name, Histogram()))
                for name, histogram in self.histograms.items()
            },
        )


@dataclass(frozen=True)
class SpecDecodeStats:
    drafts: float
    draft_tokens: float
    accepted_tokens: float
    accepted_per_position: list[float]

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / drafted tokens (vLLM's "Avg Draft acceptance rate" / 100)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else None

    @property
    def mean_acceptance_length(self) -> float | None:
        """1 + accepted / drafts: tokens per verification step, the bonus token included."""
        return 1 + self.accepted_tokens / self.drafts if self.drafts else None

    def silent_positions(self, k: int) -> list[int]:
        """Draft positions 0..k-1 that accepted nothing (a position the server does not expose is silent)."""
        accepted = self.accepted_per_position
        return [i for i in range(k) if i >= len(accepted) or accepted[i] <= 0]

    @property
    def per_position_rates(self) -> list[float]:
        """Accepted at position i / drafts (unconditional, as vLLM logs it)."""
        if not self.drafts:
            return [0.0 for _ in self.accepted_per_position]
        return [a / self.drafts for a in self.accepted_per_position]


@dataclass(frozen=True)
class MetricsDelta:
    counters: dict[str, float]
    per_position: dict[int, float]
    histograms: dict[str, Histogram] = field(default_factory=dict)

    def counter(self, name: str) -> float:
        return self.counters.get(name, 0.0)

    def quantile(self, name: str, q: float) -> float | None:
        """The q-quantile of one histogram over the delta's window (None: no observations)."""
        histogram = self.histograms.get(name)
        return histogram.quantile(q) if histogram else None

    @property
    def spec_decode(self) -> SpecDecodeStats:
        return SpecDecodeStats(
            drafts=self.counter(DRAFTS),
            draft_tokens=self.counter(DRAFT_TOKENS),
            accepted_tokens=self.counter(ACCEPTED),
            accepted_per_position=[self.per_position[p] for p in sorted(self.per_position)],
        )

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        queries = self.counter(PREFIX_QUERIES)
        return self.counter(PREFIX_HITS) / queries if queries else None


_GAUGES = {KV_USAGE, RUNNING, WAITING}


def parse_metrics(text: str) -> MetricsSnapshot:
    """Parse Prometheus text exposition into a snapshot of vLLM's counters, gauges and histograms.

    Counters are keyed by family name without `_total`; `_created` samples are ignored.
    Histograms are summed over their label sets (every engine and model) per bound.
    """
    counters: dict[str, float] = defaultdict(float)
    gauges: dict[str, float] = defaultdict(float)
    per_position: dict[int, float] = defaultdict(float)
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if family.type == "histogram":
                if sample.name.endswith("_bucket"):
                    if "le" not in sample.labels:  # a server that lies: malformed, as a bad number is
                        raise ValueError(f"{sample.name} has a bucket without its le label")
                    buckets[family.name][float(sample.labels["le"])] += sample.value
                elif sample.name.endswith("_sum"):
                    sums[family.name] += sample.value
                elif sample.name.endswith("_count"):
                    counts[family.name] += sample.value
                continue
            # Untyped families count too: some exporters omit or misplace # TYPE lines.
            if family.type in {"counter", "unknown"} and sample.name.endswith("_total"):
                name = sample.name.removesuffix("_total")
                if name == ACCEPTED_PER_POS:
                    per_position[int(sample.labels.get("position", "0"))] += sample.value
                else:
                    counters[name] += sample.value
            elif family.name in _GAUGES:
                gauges[family.name] += sample.value
    histograms = {
        name: Histogram(buckets=dict(bounds), count=counts.get(name, 0.0), total=sums.get(name, 0.0))
        for name, bounds in buckets.items()
    }
    return MetricsSnapshot(
        counters=dict(counters), per_position=dict(per_position), gauges=dict(gauges), histograms=histograms
    )


def gauge_sum(text: str, name: str) -> float | None:
    """The sum of one metric's samples, read without parsing anything else (None when absent).

    For polling during a benchmark cell: parse_metrics takes ~27 ms over vLLM's
    /metrics on this machine, a stall of the event loop that times the streams;
    this scan takes well under a millisecond.
    """
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in ("{", " "):
            continue
        rest = line[line.rfind("}") + 1 :] if line[len(name)] == "{" else line[len(name) :]
        fields = rest.split()
        if fields:
            total += float(fields[0])  # `value [timestamp]`
            found = True
    return total if found else None


def per_label(text: str, name: str, label: str) -> dict[str, float]:
    """One metric's samples keyed by one label's value (vllm-router: requests and health per worker).

    `name` is the sample name as exposed (`vllm_router_processed_requests_total`); samples without the
    label are skipped, and samples of the same label value are summed.
    """
    found: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and label in sample.labels:
                found[sample.labels[label]] += sample.value
    return dict(found)
