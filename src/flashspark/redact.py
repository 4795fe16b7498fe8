"""Remove secrets from text before it is written anywhere: captures, log copies, failure records, results.

Two nets: the exact values known to be secret (API key, HF token, any secret-named variable), and
the shapes secrets take when they come from somewhere else: a token in a container's environment,
a bearer or basic credential in a header, a password in a URL, vLLM's own `'api_key': [...]` in its
logged arguments, an `--api-key X` on a command line.

Exact values are registered once per process with `add_masks` (as CI systems mask a secret from
every log line): the recipe registers its secrets when it is resolved, the client its key. The one
file writer (`flashspark.files`) then masks them from every file FlashSpark writes, whoever writes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from flashspark.secrets import is_secret_name

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


_URL_CREDENTIALS = _SHAPES[2]
_masks: set[str] = set()


def add_masks(values: Iterable[str | None]) -> None:
    """Mask these exact values from every file written and every redacted text, for this process."""
    _masks.update(v for v in values if v and len(v) >= MIN_EXACT)


def clear_masks() -> None:
    """Forget the registered values (a test resolving many recipes must not mask the next one's output)."""
    _masks.clear()


def _exact(text: str, secrets: Iterable[str]) -> str:
    values = _masks.union(s for s in secrets if s and len(s) >= MIN_EXACT)
    for value in sorted(values, key=len, reverse=True):  # longest first: a secret containing another
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Every net: exact values (registered and given) and every shape. For logs, captures, messages."""
    text = _exact(text, secrets)
    for shape in _SHAPES:
        text = shape.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


def redact_exact(text: str) -> str:
    """Registered values and URL credentials only: safe on any file (a script, a template, JSON),
    where the name-shaped nets could rewrite text that merely mentions a secret's name."""
    return _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK, _exact(text, ()))


# Header names that carry credentials without a secret word in them.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """HTTP headers as they may be written: credentials by name (Authorization, X-Api-Key, Cookie ...)
    masked, every other value redacted."""
    return {
        name: MASK if name.lower() in CREDENTIAL_HEADERS or is_secret_name(name) else redact(value)
        for name, value in headers.items()
    }


def redact_values(text: str, secrets: Iterable[str]) -> str:
    """Registered values and the given ones, exactly: for text whose secrets were found elsewhere (a
    recorded answer echoing a key that only its request showed to be one)."""
    return _exact(text, secrets)


def found_secrets(data: Any) -> set[str]:
    """The secret values inside JSON-shaped data: secret-named keys' strings and secret-shaped substrings."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            if key != "key" and is_secret_name(str(key)) and isinstance(value, str) and value:
                found.add(value)
            else:
                found |= found_secrets(value)
    elif isinstance(data, list | tuple):
        for item in data:
            found |= found_secrets(item)
    elif isinstance(data, str):
        for shape in _SHAPES:
            for match in shape.finditer(data):
                value = match.group(0)[len(match.group(1)) :] if match.groups() else match.group(0)
                found.add(value.strip("\"'"))
    return {value for value in found if len(value) >= MIN_EXACT}


def redact_data(data: Any, *, by_key: bool = True) -> Any:
    """JSON-shaped data with every string redacted and, `by_key`, every secret-named key's string value
    masked. A bare `key` names a setting in FlashSpark's payloads (an error's key), not a secret."""
    if isinstance(data, dict):
        return {
            key: MASK
            if by_key and key != "key" and is_secret_name(str(key)) and isinstance(value, str) and value
            else redact_data(value, by_key=by_key)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact_data(item, by_key=by_key) for item in data]
    if isinstance(data, str):
        return redact(data)
    return data
