"""Where clients on the head reach what a recipe binds."""

from __future__ import annotations

from flashspark.recipe.model import Recipe


def probe_host(host: str) -> str:
    """The address a client on the head uses for an API bound to `host`."""
    if host in {"0.0.0.0", ""}:
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def api_base_url(recipe: Recipe) -> str:
    """Where clients on the head reach the recipe's API (…/v1); a wildcard bind is probed on loopback."""
    return f"http://{probe_host(recipe.api.host)}:{recipe.api.port}/v1"
