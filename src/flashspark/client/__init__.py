"""Client: a streaming OpenAI-compatible chat client, an SSE parser and a `/metrics` reader."""

from flashspark.client.chat import OpenAIClient
from flashspark.client.metrics import MetricsDelta, MetricsSnapshot, SpecDecodeStats, parse_metrics
from flashspark.client.schema import ChatRequest, ChatResult, ModelEntry, Timeouts, normalize_base_url
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
