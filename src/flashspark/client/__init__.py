"""Client: a streaming OpenAI-compatible chat client, an SSE parser and a `/metrics` reader.

The names are loaded on first use, so that the CLI can read the light parts (the timeout
defaults of `client.schema`) without importing the HTTP stack at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flashspark.client.chat import OpenAIClient
    from flashspark.client.metrics import MetricsDelta, MetricsSnapshot, SpecDecodeStats, parse_metrics
    from flashspark.client.schema import ChatRequest, ChatResult, ModelEntry, Timeouts, normalize_base_url, thinking_off
    from flashspark.client.sse import SSEEvent, SSEParser

_HOMES = {
    "OpenAIClient": "chat",
    "MetricsDelta": "metrics",
    "MetricsSnapshot": "metrics",
    "SpecDecodeStats": "metrics",
    "parse_metrics": "metrics",
    "ChatRequest": "schema",
    "ChatResult": "schema",
    "ModelEntry": "schema",
    "Timeouts": "schema",
    "normalize_base_url": "schema",
    "thinking_off": "schema",
    "SSEEvent": "sse",
    "SSEParser": "sse",
}

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
    "thinking_off",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
