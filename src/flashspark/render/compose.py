"""One compose file per node, for the `compose` runtime.

The same plan a bare-metal node gets, wrapped for Docker: host network and
IPC (NCCL and vLLM's rendezvous need the host's interfaces), the RDMA devices,
the HF cache as the only volume, labels that let `down` find every container,
and a healthcheck on the head only (workers serve no HTTP).
"""

from __future__ import annotations

from typing import Any

from flashspark.recipe.model import Node, Recipe

LABEL_PREFIX = "io.flashspark"
SECRETS_ENV_FILE = "secrets.env"
SERVICE = "vllm"


def project_name(recipe: Recipe) -> str:
    """The fixed compose project name, so status/down never guess it from a folder."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in recipe.cluster.name.lower())


def labels(recipe: Recipe, node: Node, rank: int) -> dict[str, str]:
    return {
        f"{LABEL_PREFIX}.deployment": recipe.cluster.name,
        f"{LABEL_PREFIX}.profile": recipe.profile.name,
        f"{LABEL_PREFIX}.node": node.name,
        f"{LABEL_PREFIX}.rank": str(rank),
        f"{LABEL_PREFIX}.role": "head" if rank == 0 else "worker",
    }


def _escape(value: str) -> str:
    # Compose interpolates $VAR in every string; the plan's values are literal.
    return value.replace("$", "$$")


def render_compose(
    recipe: Recipe,
    node: Node,
    *,
    rank: int,
    argv: list[str],
    env: dict[str, str],
    has_secrets: bool,
) -> dict[str, Any]:
    """The compose document for one node, as plain data (dump it as YAML)."""
    service: dict[str, Any] = {
        "image": recipe.cluster.image,
        "entrypoint": [_escape(argv[0])],
        "command": [_escape(arg) for arg in argv[1:]],
        "network_mode": "host",
        "ipc": "host",
        "shm_size": recipe.cluster.shm_size,
        "init": True,
        "restart": recipe.cluster.restart_policy,
        "stop_grace_period": "30s",
        "ulimits": {"stack": 67108864},
        "environment": {key: _escape(value) for key, value in env.items()},
        "labels": labels(recipe, node, rank),
    }
    if recipe.cluster.fabric == "roce":
        # RDMA registers (pins) NCCL's buffers: unlimited locked memory, and the verbs devices.
        service["ulimits"]["memlock"] = -1
        service["devices"] = ["/dev/infiniband:/dev/infiniband"]
        service["gpus"] = "all"
    if node.hf_cache:
        service["volumes"] = [f"{_escape(node.hf_cache)}:/cache/huggingface"]
    if has_secrets:
        # Secrets come from an owner-only file beside the compose file, written
        # at launch; the rendered file only names it.
        service["env_file"] = [{"path": SECRETS_ENV_FILE, "required": False}]
    if rank == 0:
        url = f"http://127.0.0.1:{recipe.api.port}/health"
        service["healthcheck"] = {
            "test": ["CMD-SHELL", f"curl -fsS {url} >/dev/null || wget -qO- {url} >/dev/null"],
            "interval": "30s",
            "timeout": "10s",
            "retries": 3,
            # A 1M-context two-node boot takes 5-10 minutes before /health answers.
            "start_period": "20m",
        }
    return {
        "name": project_name(recipe),
        "services": {SERVICE: service},
    }
