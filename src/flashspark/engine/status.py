"""Where the embedded engine is, and which local models are built: `flashspark engine status`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flashspark.engine.install import engine_dir, find_engine
from flashspark.engine.models import LOCAL_MODELS, model_is_built
from flashspark.recipe import default_home, default_models_dir


class EngineStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    engine_dir: str
    installed: bool
    vllm_version: str | None
    torch_version: str | None
    models_dir: str
    models: dict[str, bool]


def engine_status(environ: Mapping[str, str]) -> EngineStatus:
    home = default_home(environ)
    root = engine_dir(environ, home)
    engine = find_engine(root)
    models_dir = Path(default_models_dir(environ, home))
    return EngineStatus(
        engine_dir=str(root),
        installed=engine is not None,
        vllm_version=engine.vllm_version if engine else None,
        torch_version=engine.torch_version if engine else None,
        models_dir=str(models_dir),
        models={name: model_is_built(models_dir / name) for name in LOCAL_MODELS},
    )
