"""Layering: built-in defaults < profile < config file < `--set`, with provenance.

Each layer is a nested dict shaped like `Recipe`; a later layer overrides an
earlier one key by key (lists of nodes merge by position). Every leaf
remembers where it came from, so an error can name the flat key, the file
and the line, and `config check --json` can show why a value is what it is.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict

from flashspark.errors import Problem, RecipeError
from flashspark.recipe import keys
from flashspark.recipe.envfile import EnvEntry, read_config_text
from flashspark.recipe.model import SECRET_MASK, Recipe
from flashspark.secrets import is_secret_name

DEFAULT_PROFILE = "agent-1m"

Tree = dict[str, Any]


@dataclass(frozen=True)
class Origin:
    """Where one leaf value came from."""

    layer: str  # "default" | "profile" | "file" | "set"
    source: str  # profile name, file path, or "--set"
    key: str | None = None  # the flat key the user wrote, when there was one
    line: int | None = None

    def describe(self) -> str:
        if self.line is not None:
            return f"{self.source}:{self.line}"
        return self.source


@dataclass
class Layer:
    """One source of settings, with the origin of each leaf and its own findings."""

    tree: Tree
    origins: dict[str, Origin] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


# --- profiles ---------------------------------------------------------------------------


def profile_names() -> list[str]:
    """Names of the profiles shipped with FlashSpark."""
    folder = resources.files("flashspark.recipe") / "profiles"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


class ProfileSummary(BaseModel):
    """One line of `flashspark profiles`: what a profile is for and its headline settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    summary: str
    max_model_len: int | None
    max_num_seqs: int | None
    kv_cache_dtype: str | None
    speculative: str | None


def profile_summaries() -> list[ProfileSummary]:
    rows = []
    for name in profile_names():
        tree = load_profile_tree(name)
        engine = tree.get("engine", {})
        rows.append(
            ProfileSummary(
                name=name,
                summary=tree.get("profile", {}).get("summary", ""),
                max_model_len=engine.get("max_model_len"),
                max_num_seqs=engine.get("max_num_seqs"),
                kv_cache_dtype=engine.get("kv_cache_dtype"),
                speculative=tree.get("speculative", {}).get("method"),
            )
        )
    return rows


def load_profile_tree(name: str) -> Tree:
    """A shipped profile as a nested dict, with `extends` resolved."""
    return _load_profile_tree(name, seen=())


def _load_profile_tree(name: object, seen: tuple[str, ...]) -> Tree:
    if name in seen:
        raise RecipeError(
            f"profile {name!r} extends itself through {' -> '.join(seen)}",
            key="extends",
            value=name,
            fix="break the cycle of `extends` between the profiles",
        )
    # Only a shipped profile, by name: a path-like name ("../../x") must not reach the file system.
    resource = resources.files("flashspark.recipe") / "profiles" / f"{name}.toml"
    if not isinstance(name, str) or name not in profile_names():
        close = difflib.get_close_matches(str(name), profile_names(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RecipeError(
            f"unknown profile {name!r}",
            key="profile",
            value=name,
            fix=f"{hint}list the profiles with `flashspark profiles`",
        )
    tree = tomllib.loads(resource.read_text(encoding="utf-8"))
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    base = _load_profile_tree(str(parent), (*seen, name))
    # A child profile's decisions add to its parent's, they do not replace them.
    decisions = [*base.get("profile", {}).get("decisions", []), *tree.get("profile", {}).get("decisions", [])]
    merged = merge_trees(base, tree)
    merged.setdefault("profile", {})["decisions"] = decisions
    return merged


def profile_layer(name: str) -> Layer:
    tree = load_profile_tree(name)
    tree.setdefault("profile", {})["name"] = name
    return Layer(tree=tree, origins={p: Origin("profile", f"profile:{name}") for p in leaf_paths(tree)})


# --- config files -----------------------------------------------------------------------


def toml_layer(path: Path) -> Layer:
    try:
        tree = tomllib.loads(read_config_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(
            f"{path} is not valid TOML: {exc}",
            where=str(path),
            fix="fix the TOML syntax at the position named",
        ) from exc
    except RecursionError:
        _too_deep(path)
    if depth(tree) > MAX_DEPTH:
        _too_deep(path)
    if "profile" in tree and isinstance(tree["profile"], str):
        tree["profile"] = {"name": tree["profile"]}
    _check_shape(tree, path)
    return Layer(tree=tree, origins={p: Origin("file", str(path)) for p in leaf_paths(tree)})


def env_layer(
    entries: Mapping[str, EnvEntry],
    *,
    source: str,
    profile_tree: Tree,
    kind: str = "file",
    min_nodes: int = 1,
) -> Layer:
    """Map the recipe's flat variable names onto recipe paths.

    `min_nodes` makes a shared node key (HF_CACHE, NCCL_*) reach workers that
    an earlier layer defined, when this layer names no worker itself.
    """
    layer = Layer(tree={})
    nodes: dict[int, dict[str, tuple[Any, EnvEntry]]] = {}
    shared: dict[str, EnvEntry] = {}
    profile_env: dict[str, dict[str, str]] = profile_tree.get("env", {})

    def put(path: str, value: object, entry: EnvEntry) -> None:
        set_path(layer.tree, path, value)
        layer.origins[path] = Origin(kind, source, entry.key, entry.line or None)

    for entry in entries.values():
        key, value = entry.key, entry.value
        if entry.replaces_line is not None:
            layer.problems.append(
                Problem(
                    key,
                    shown(key, value),
                    f"set twice (lines {entry.replaces_line} and {entry.line}); the later line wins",
                    "keep one of the two lines",
                    severity="warning",
                    where=_where(source, entry),
                )
            )
        if value == "":
            continue  # An empty value means "not set", as in the recipe's scripts.
        if key in keys.SCALAR_KEYS:
            put(keys.SCALAR_KEYS[key], value, entry)
        elif key in keys.HEAD_KEYS:
            nodes.setdefault(0, {})[keys.HEAD_KEYS[key]] = (value, entry)
            if key in keys.SHARED_NODE_FIELDS:
                shared[key] = entry
        elif (match := keys.WORKER_KEY.match(key)) and match["field"] in keys.NODE_FIELDS:
            index = int(match["index"] or 1)
            if index > keys.MAX_INDEX:
                raise RecipeError(
                    f"{key}: worker {index} is past the last node a cluster file may name ({keys.MAX_INDEX})",
                    key=key,
                    where=_where(source, entry),
                    fix="number workers WORKER_, WORKER2_, WORKER3_, ...",
                )
            field_name = keys.NODE_FIELDS[match["field"]]
            current = nodes.setdefault(index, {})
            # WORKER_SCRIPT_DIR wins over WORKER_DIR, as in the recipe's scripts.
            if match["field"] == "DIR" and "checkout_dir" in current:
                continue
            current[field_name] = (value, entry)
        elif key in keys.RECOGNISED_UNUSED:
            layer.problems.append(
                Problem(
                    key,
                    shown(key, value),
                    "recognised but not used",
                    keys.RECOGNISED_UNUSED[key],
                    severity="note",
                    where=_where(source, entry),
                )
            )
        elif group := _env_group_of(key, profile_env):
            put(f"env.{group}.{key}", value, entry)
        elif key.startswith(keys.PASSTHROUGH_PREFIXES):
            put(f"env.extra.{key}", value, entry)
        else:
            close = difflib.get_close_matches(key, keys.all_flat_keys(), n=1, cutoff=0.75)
            fix = f"did you mean {close[0]}?" if close else "remove it, or check its spelling"
            layer.problems.append(
                Problem(
                    key, shown(key, value), "unknown key, ignored", fix, severity="warning", where=_where(source, entry)
                )
            )

    if nodes:
        count = max(max(nodes) + 1, min_nodes if shared else 1)
        _place_nodes(layer, nodes, shared, Origin(kind, source), count)
    return layer


# The recipe's deepest setting is nodes.<i>.env.<NAME> inside a table: 4 levels; 8 leaves room.
MAX_DEPTH = 8


def depth(tree: object) -> int:
    """How deeply tables and lists nest (iterative: a hostile file must not exhaust the stack)."""
    deepest, stack = 0, [(tree, 0)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _too_deep(path: Path) -> NoReturn:
    raise RecipeError(
        f"{path} nests tables or lists more than {MAX_DEPTH} levels deep",
        where=str(path),
        fix="no setting nests this deep: check the file (see `flashspark config init` for the shape)",
    )


def shown(key: str, value: object) -> object:
    """A value as a message may show it: masked when its key's name says it is a secret."""
    return SECRET_MASK if is_secret_name(key) else value


def _check_shape(tree: Tree, path: Path) -> None:
    """Every recipe section a table, `nodes` a list of tables, each env group a table: the shapes the
    layering walks, checked before it does (`nodes = 5` is a mistake to name, not to crash on)."""
    wrong = [
        (key, "a table", f"write it as a [{key}] table")
        for key, value in tree.items()
        if key in Recipe.model_fields and key not in {"nodes", "replicas"} and not isinstance(value, dict)
    ]
    for key in ("nodes", "replicas"):
        items = tree.get(key, [])
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            wrong.append((key, "a list of tables", f"write each as a [[{key}]] table"))
    env = tree.get("env", {})
    if isinstance(env, dict):
        wrong += [
            (f"env.{group}", "a table", f'write it as an [env.{group}] table of NAME = "value"')
            for group, values in env.items()
            if not isinstance(values, dict)
        ]
    if wrong:
        key, shape, fix = wrong[0]
        if key == "profile":
            shape, fix = "a profile name or a table", 'write profile = "agent-1m" (see `flashspark profiles`)'
        raise RecipeError(f"{path}: `{key}` must be {shape}", key=key, where=str(path), fix=fix)


def _where(source: str, entry: EnvEntry) -> str:
    return f"{source}:{entry.line}" if entry.line else source


def _env_group_of(key: str, profile_env: Mapping[str, Mapping[str, str]]) -> str | None:
    for group, values in profile_env.items():
        if key in values:
            return group
    return None


def _place_nodes(
    layer: Layer,
    nodes: dict[int, dict[str, tuple[Any, EnvEntry]]],
    shared: dict[str, EnvEntry],
    origin: Origin,
    count: int,
) -> None:
    node_list: list[dict[str, Any]] = []
    for index in range(count):
        node: dict[str, Any] = {}
        found = [(keys.HEAD_KEYS[k], (e.value, e)) for k, e in shared.items()] if index else []
        found += list(nodes.get(index, {}).items())
        for field_name, (value, entry) in found:
            node[field_name] = value
            layer.origins[f"nodes.{index}.{field_name}"] = Origin(
                origin.layer, origin.source, entry.key, entry.line or None
            )
        node_list.append(node)
    layer.tree["nodes"] = node_list


# --- --set ------------------------------------------------------------------------------


def parse_sets(pairs: Iterable[str]) -> dict[str, str]:
    """`KEY=VALUE` strings into a dict; raises RecipeError naming a malformed pair."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise RecipeError(
                f"--set {pair!r} is not KEY=VALUE",
                key="--set",
                value=pair,
                fix="write --set MAX_NUM_SEQS=4 or --set engine.max_num_seqs=4",
            )
        parsed[key.strip()] = value
    return parsed


def set_layer(sets: Mapping[str, str], *, profile_tree: Tree, node_count: int) -> Layer:
    """`--set` values: flat recipe names or dotted recipe paths."""
    flat = {k: EnvEntry(k, v, 0) for k, v in sets.items() if "." not in k}
    layer = env_layer(flat, source="--set", profile_tree=profile_tree, kind="set", min_nodes=node_count)
    for path, value in sets.items():
        if "." in path:
            set_path(layer.tree, path, _literal(value))
            layer.origins[path] = Origin("set", "--set", path)
    return layer


def _literal(value: str) -> object:
    """A dotted --set value that looks like a TOML array or table becomes one."""
    if value.strip()[:1] in {"[", "{"}:
        try:
            return tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            return value
    return value


# --- trees ------------------------------------------------------------------------------


def set_path(tree: Tree, path: str, value: object) -> None:
    """Set `a.b.0.c` in a nested dict, creating dicts and list slots on the way."""
    parts = path.split(".")
    cursor: Any = tree
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        nxt: Any = value if last else ([] if parts[position + 1].isdigit() else {})
        if isinstance(cursor, list):
            index = int(part)
            if index > keys.MAX_INDEX:
                raise RecipeError(
                    f"{path}: position {index} is past the last one a setting may name ({keys.MAX_INDEX})",
                    key=path,
                    fix="count list positions from 0 (nodes.1 is the first worker)",
                )
            while len(cursor) <= index:
                cursor.append({})
            if last:
                cursor[index] = value
            elif not isinstance(cursor[index], dict | list):
                cursor[index] = nxt
            cursor = cursor[index]
        else:
            if last:
                cursor[part] = value
            elif part not in cursor or not isinstance(cursor[part], dict | list):
                cursor[part] = nxt
            cursor = cursor[part]


def merge_trees(base: Tree, override: Tree) -> Tree:
    """Deep-merge `override` onto `base`; lists of dicts merge by position."""
    result: Tree = dict(base)
    for key, value in override.items():
        if key in result and isinstance(result[key], dict) and isinstance(value, dict):
            result[key] = merge_trees(result[key], value)
        elif (
            key in result
            and isinstance(result[key], list)
            and isinstance(value, list)
            and all(isinstance(v, dict) for v in [*result[key], *value])
        ):
            merged = [dict(item) for item in result[key]]
            for index, item in enumerate(value):
                if index < len(merged):
                    merged[index] = merge_trees(merged[index], item)
                else:
                    merged.append(item)
            result[key] = merged
        else:
            result[key] = value
    return result


def leaf_paths(tree: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf (dicts recurse, lists of dicts recurse by index)."""
    paths: list[str] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            paths.extend(leaf_paths(value, f"{prefix}{key}."))
    elif isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        for index, value in enumerate(tree):
            paths.extend(leaf_paths(value, f"{prefix}{index}."))
    else:
        paths.append(prefix.rstrip("."))
    return paths
