"""Which settings are secret: found by name, in every layer (typed fields, env groups, a node's env, --set).

A name is secret when one of its words is a secret word, whatever the case and the prefix:
HF_TOKEN, HUGGING_FACE_HUB_TOKEN, WORKER_VLLM_API_KEY, apiKey, db-password. Words, not
substrings: MAX_NUM_BATCHED_TOKENS and VLLM_CPU_KVCACHE_SPACE are not secrets.
"""

from __future__ import annotations

import re

SECRET_WORDS = frozenset(
    {"token", "key", "apikey", "password", "passwd", "pwd", "secret", "credential", "credentials", "auth"}
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def name_words(name: str) -> list[str]:
    """The words of a setting's name: snake_case, SCREAMING_CASE, camelCase, kebab-case and dotted."""
    return [w.lower() for part in re.split(r"[^A-Za-z0-9]+", name) for w in _WORD.findall(part)]


def is_secret_name(name: str) -> bool:
    return any(word in SECRET_WORDS for word in name_words(name))
