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


def worker_url(recipe: Recipe) -> str:
    """Where vLLM's router reaches a replica's API: its base URL without /v1 (the router adds the path)."""
    return api_base_url(recipe).removesuffix("/v1")


def router_url(recipe: Recipe) -> str:
    """Where clients reach a fleet's router (…/v1); a wildcard bind is probed on loopback, as for the API."""
    return f"http://{probe_host(recipe.router.host)}:{recipe.router.port}/v1"
