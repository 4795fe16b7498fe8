"""Remove secrets from text before it is written anywhere: captures, log copies, failure records, results.

Two nets: the exact values the recipe marks secret (API key, HF token, any secret-named variable),
and the shapes secrets take when they come from somewhere else: a token in a container's
environment, a bearer or basic credential in a header, a password in a URL, vLLM's own
`'api_key': [...]` in its logged arguments, an `--api-key X` on a command line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# Exact values shorter than this are too likely to occur by chance (a 2-character key would
# blank every matching pair of letters); the shapes below still catch them by their context.
MIN_EXACT = 4
# A secret-named key: a secret word as a whole word of a SCREAMING_CASE, snake_case, kebab-case
# or camelCase name (HF_TOKEN, api_key, x-api-key, apiKey, accessToken) - not "tokens=512".
_NAME = (
    r"(?:[A-Za-z0-9]+[_-])*(?:TOKEN|API_KEY|APIKEY|SECRET|PASSWORD|PASSWD|CREDENTIALS?|"
    r"token|api_key|apikey|api-key|secret|password|passwd|credentials?)"
    r"|[a-z]+(?:Token|Key|Secret|Password)"
)
_SHAPES = [
    re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"),
    re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{6,}"),
    # scheme://user:password@host
    re.compile(r"([a-z][a-z0-9+.-]*://[^\s/:@]+:)[^\s/@]+(?=@)", re.IGNORECASE),
    # --api-key VALUE, --hf-token=VALUE
    re.compile(r"(--(?:api-key|hf-token|token|password)(?:\s+|=))(?!-)\S+"),
    # vLLM's logged arguments: 'api_key': ['sk-...'] or 'api_key': 'sk-...'
    re.compile(r"('(?:api_key|hf_token)':\s*\[?')[^']+"),
    # NAME="a quoted value, spaces included" and NAME: 'value'
    re.compile(rf"(\b(?:{_NAME})\"?\s*[=:]\s*)(\"[^\"\n]*\"|'[^'\n]*')"),
    # NAME=value, "NAME": "value", NAME: value
    re.compile(rf"(\b(?:{_NAME})\b\"?\s*[=:]\s*\"?)[^\s\",*]+"),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for value in sorted({s for s in secrets if s and len(s) >= MIN_EXACT}, key=len, reverse=True):
        text = text.replace(value, MASK)
    for shape in _SHAPES:
        text = shape.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text
