"""Client: a streaming OpenAI-compatible chat client, an SSE parser and a `/metrics` reader."""

from flashspark.client.chat import ChatRequest, ChatResult, ModelEntry, OpenAIClient, Timeouts, normalize_base_url
from flashspark.client.metrics import MetricsDelta, MetricsSnapshot, SpecDecodeStats, parse_metrics
from flashspark.client.sse import SSEEvent, SSEParser

__all__ = [
    "ChatRequest",
    "ChatResult",
    "MetricsDelta",
    "MetricsSnapshot",
    "ModelEntry",
    "OpenAIClient",
    "SSEEvent",
    "SSEParser",
    "SpecDecodeStats",
    "Timeouts",
    "normalize_base_url",
    "parse_metrics",
]
