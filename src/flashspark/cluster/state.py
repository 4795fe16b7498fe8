"""What FlashSpark remembers about a deployment it started: one JSON file per deployment."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from flashspark.files import write_json
from flashspark.recipe.model import Recipe

STATE_SCHEMA_VERSION = 1


class NodeProcess(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str
    rank: int
    runtime: str = "process"
    pid: int = Field(default=0, description="process runtime: the engine's pid (its own process group).")
    pgid: int = 0
    container: str | None = Field(default=None, description="compose runtime: the container id.")
    log_path: str = Field(description="process: the log file; compose: the node's compose file.")


class DeploymentState(BaseModel):
    """A running deployment: enough to find, probe and stop it without the recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = STATE_SCHEMA_VERSION
    deployment: str
    profile: str
    runtime: str
    run_dir: str
    base_url: str = Field(description="Where clients on this machine reach the API (…/v1).")
    api_host: str
    api_port: int
    served_model_name: str
    started_at: float
    nodes: list[NodeProcess]

    @classmethod
    def started(cls, recipe: Recipe, *, run_dir: str, base_url: str, nodes: list[NodeProcess]) -> DeploymentState:
        """The record of a deployment that was just started from `recipe`."""
        return cls(
            deployment=recipe.cluster.name,
            profile=recipe.profile.name,
            runtime=recipe.cluster.runtime,
            run_dir=run_dir,
            base_url=base_url,
            api_host=recipe.api.host,
            api_port=recipe.api.port,
            served_model_name=recipe.model.served_name,
            started_at=time.time(),
            nodes=nodes,
        )


def state_path(recipe: Recipe) -> Path:
    return Path(recipe.paths.state_dir) / f"{recipe.cluster.name}.json"


def read_state(path: Path) -> DeploymentState | None:
    if not path.is_file():
        return None
    return DeploymentState.model_validate(json.loads(path.read_text()))


def write_state(path: Path, state: DeploymentState) -> None:
    write_json(path, state.model_dump(mode="json"), mode=0o600)
