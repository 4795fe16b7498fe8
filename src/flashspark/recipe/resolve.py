"""Resolve a recipe: pick the profile, layer the sources, type-check, run the rules."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from flashspark.errors import Problem, RecipeError, RecipeInvalid
from flashspark.recipe import keys
from flashspark.recipe.envfile import read_env_file
from flashspark.recipe.model import Recipe
from flashspark.recipe.rules import check_recipe
from flashspark.recipe.sources import (
    DEFAULT_PROFILE,
    Layer,
    Origin,
    Tree,
    env_layer,
    leaf_paths,
    merge_trees,
    parse_sets,
    profile_layer,
    set_layer,
    toml_layer,
)
from flashspark.redact import add_masks


@dataclass(frozen=True)
class ResolvedRecipe:
    """A recipe plus where each value came from and what the rules found."""

    recipe: Recipe
    origins: dict[str, Origin] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def origin_of(self, path: str) -> str:
        origin = self.origins.get(path)
        if origin is None:
            # A section (e.g. "nodes") takes the origin of its first leaf.
            inner = sorted(p for p in self.origins if p.startswith(path + "."))
            origin = self.origins[inner[0]] if inner else None
        return origin.describe() if origin else "default"

    def all_origins(self) -> dict[str, str]:
        """Every setting's dotted path -> where it came from (`default` when no layer set it)."""
        leaves: dict[str, str] = {}

        def walk(tree: dict[str, object], prefix: str) -> None:
            for key, value in tree.items():
                path = f"{prefix}{key}"
                if isinstance(value, dict) and value and key != "env":
                    walk(value, path + ".")
                else:
                    leaves[path] = self.origin_of(path)

        walk(self.recipe.public_dict(), "")
        leaves.update({path: origin.describe() for path, origin in self.origins.items()})
        return dict(sorted(leaves.items()))


def default_models_dir(environ: Mapping[str, str], home: str) -> str:
    """FLASHSPARK_MODELS_DIR, else <home>/models: where FlashSpark builds its local models."""
    return environ.get("FLASHSPARK_MODELS_DIR") or f"{home}/models"


def default_home(environ: Mapping[str, str]) -> str:
    """FLASHSPARK_HOME, else ~/.cache/flashspark."""
    home = environ.get("FLASHSPARK_HOME")
    if home:
        return home
    return str(Path(environ.get("HOME", str(Path.home()))) / ".cache" / "flashspark")


def resolve_recipe(
    *,
    profile: str | None = None,
    config: Path | None = None,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    strict: bool = True,
) -> ResolvedRecipe:
    """Layer defaults < profile < config file < --set into a checked Recipe.

    The profile comes from `profile`, else the file's PROFILE / profile key,
    else agent-1m. With `strict`, any error-level problem raises RecipeInvalid
    (carrying every problem); otherwise problems are returned for display.
    Raises RecipeError for unreadable files, unknown profiles and bad --set pairs.
    """
    environ = dict(os.environ if environ is None else environ)
    set_values = parse_sets(sets)

    file_entries = None
    toml: Layer | None = None
    if config is not None and config.suffix == ".toml":
        toml = toml_layer(config)
    elif config is not None:
        file_entries = read_env_file(config, environ=environ)

    chosen = (
        profile
        or set_values.get("PROFILE")
        or set_values.get("profile.name")
        or (file_entries["PROFILE"].value if file_entries and "PROFILE" in file_entries else None)
        or (toml.tree.get("profile", {}).get("name") if toml else None)
        or DEFAULT_PROFILE
    )
    base = profile_layer(chosen)
    layers: list[Layer] = [base]
    if toml is not None:
        layers.append(toml)
    elif file_entries is not None and config is not None:
        layers.append(env_layer(file_entries, source=str(config), profile_tree=base.tree))

    tree: Tree = {}
    origins: dict[str, Origin] = {}
    problems: list[Problem] = []
    for layer in layers:
        tree = merge_trees(tree, layer.tree)
        origins.update(layer.origins)
        problems.extend(layer.problems)
    if set_values:
        sets_layer = set_layer(set_values, profile_tree=base.tree, node_count=len(tree.get("nodes", [])))
        tree = merge_trees(tree, sets_layer.tree)
        origins.update(sets_layer.origins)
        problems.extend(sets_layer.problems)

    tree.setdefault("profile", {})["name"] = chosen
    home = default_home(environ)
    tree["paths"] = {"home": home, "models_dir": default_models_dir(environ, home)}
    _name_nodes(tree)
    _apply_deprecated_forms(tree)

    try:
        recipe = Recipe.model_validate(tree)
    except pydantic.ValidationError as exc:
        problems.extend(_type_problems(exc, tree, origins))
        raise RecipeInvalid(problems) from None

    # From here on no file this process writes can hold one of the recipe's secrets (flashspark.files).
    add_masks(recipe.secret_values())
    problems.extend(_locate(check_recipe(recipe), origins))
    resolved = ResolvedRecipe(recipe=recipe, origins=origins, problems=problems)
    if strict and resolved.errors:
        raise RecipeInvalid(problems)
    return resolved


def _name_nodes(tree: Tree) -> None:
    for index, node in enumerate(tree.get("nodes", [])):
        if isinstance(node, dict) and not node.get("name"):
            node["name"] = "head" if index == 0 else f"worker{index}"


def _apply_deprecated_forms(tree: Tree) -> None:
    """Accept a few spellings the recipe's users write that the typed model does not."""
    for node in tree.get("nodes", []):
        if isinstance(node, dict) and isinstance(node.get("gid_index"), str):
            node["gid_index"] = node["gid_index"].strip().lower()


def _type_problems(exc: pydantic.ValidationError, tree: Tree, origins: dict[str, Origin]) -> list[Problem]:
    problems = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"] if not str(part).startswith(("int", "literal")))
        origin = _origin_for(path, origins)
        key = origin.key if origin and origin.key else _flat_or_path(path)
        value = error.get("input")
        if error["type"] == "extra_forbidden":
            rule, fix = (
                "not a recipe setting",
                "remove it, or check its spelling against `flashspark config init`",
            )
        else:
            rule, fix = error["msg"], _fix_for(error)
        problems.append(
            Problem(
                key,
                value if not isinstance(value, dict) else None,
                rule,
                fix,
                where=origin.describe() if origin else None,
            )
        )
    return problems


def _origin_for(path: str, origins: dict[str, Origin]) -> Origin | None:
    while path:
        if path in origins:
            return origins[path]
        path = path.rpartition(".")[0]
    return None


def _fix_for(error: Any) -> str:
    kind = error["type"]
    if kind.startswith("int"):
        return "write a whole number"
    if kind.startswith("float"):
        return "write a number such as 0.80"
    if kind.startswith("bool"):
        return "write 1 or 0 (true or false)"
    if kind == "literal_error":
        return f"use one of: {error.get('ctx', {}).get('expected', 'the listed values')}"
    if kind == "missing":
        return "set it"
    return "correct the value"


def _flat_or_path(path: str) -> str:
    for name, target in keys.SCALAR_KEYS.items():
        if target == path:
            return name
    return path


def _locate(problems: list[Problem], origins: dict[str, Origin]) -> list[Problem]:
    """Add file:line to problems whose flat key came from the config file."""
    by_key = {o.key: o for o in origins.values() if o.key}
    located = []
    for problem in problems:
        origin = by_key.get(problem.key)
        if problem.where is None and origin is not None:
            problem = Problem(
                problem.key, problem.value, problem.rule, problem.fix, problem.severity, origin.describe()
            )
        located.append(problem)
    return located


__all__ = ["RecipeError", "ResolvedRecipe", "default_home", "leaf_paths", "resolve_recipe"]
