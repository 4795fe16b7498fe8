"""Remove secrets from text before it is written anywhere: captures, log copies, results.

Two nets: the exact values the recipe marks secret (API key, HF token), and
the shapes secrets take when they come from somewhere else (a token in a
container's environment, a bearer header in a log line).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
_SHAPES = [
    re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    # KEY=value and "key": "value" for secret-named keys: environment names in capitals
    # (HF_TOKEN, VLLM_API_KEY) or whole lower-case words (api_key, token) - not "tokens=512".
    re.compile(
        r"(\b(?:[A-Z0-9_]*(?:TOKEN|API_KEY|SECRET|PASSWORD)[A-Z0-9_]*|api_key|hf_token|token|secret|password)\b"
        r"\"?\s*[=:]\s*\"?)[^\s\",]+"
    ),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for value in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, MASK)
    for shape in _SHAPES:
        text = shape.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text
