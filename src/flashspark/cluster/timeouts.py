"""How long each kind of command on a node may take: one settings model instead of literals.

The readiness phases' budgets are the recipe's (`lifecycle.*_timeout_s`): they depend on the
model and the boot. These are properties of the commands themselves.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CommandTimeouts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ssh_connect_s: int = Field(default=10, description="ssh's ConnectTimeout: a dead node is named after this.")
    command_s: float = Field(default=60.0, description="A short command on a node (kill, ps, ss, docker inspect).")
    reach_s: float = Field(default=30.0, description="The first command of preflight or status, handshake included.")
    log_read_s: float = Field(default=60.0, description="Reading a log tail.")
    stop_margin_s: float = Field(default=30.0, description="Added to the stop grace period for the whole stop.")
    compose_up_s: float = Field(default=300.0, description="`docker compose up -d` (creating the container).")
    image_read_s: float = Field(default=300.0, description="Reading one file out of an image (a throwaway container).")
    image_hash_s: float = Field(default=600.0, description="Hashing every manifest file in an image or a venv.")
    image_build_s: float = Field(default=3600.0, description="`docker build` of the overlay image.")
    python_probe_s: float = Field(default=120.0, description="Asking a node's Python where vLLM is installed.")
    cache_probe_s: float = Field(default=300.0, description="Checking a node's HF cache by shard length.")
    cache_hash_s: float = Field(default=3600.0, description="Checking a node's HF cache by sha256 (160 GB).")
    download_s: float = Field(default=86_400.0, description="Downloading the model on the head.")


TIMEOUTS = CommandTimeouts()
