"""The `flashspark` command line: parse, call one library function, print, exit.

Everything below this package returns data or raises a FlashsparkError; only
here do errors become messages and exit codes (see `exit_codes.py`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from flashspark._version import __version__
from flashspark.cli import console, exit_codes
from flashspark.errors import FlashsparkError, RecipeInvalid
from flashspark.recipe import ResolvedRecipe, load_profile_tree, profile_names, resolve_recipe
from flashspark.recipe.template import config_template
from flashspark.render import render_plan
from flashspark.render.files import write_atomic, write_plan_files

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_CONFIG_NAMES = (".env.dspark", "flashspark.toml")


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn FlashsparkErrors into a readable message (or JSON) and the mapped exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except FlashsparkError as error:
            as_json = bool(kwargs.get("as_json"))
            if as_json:
                console.print_json(console.error_payload(error))
            else:
                console.print_error(error)
            sys.exit(exit_codes.exit_code_for(error))
        except KeyboardInterrupt:
            console.print_plain("interrupted", err=True)
            sys.exit(exit_codes.INTERRUPTED)

    return wrapper


def recipe_options(func: Callable[P, R]) -> Callable[P, R]:
    """--env/--config, --profile and --set, shared by every command that reads a recipe."""
    options = [
        click.option(
            "--env",
            "--config",
            "config",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Cluster file: .env.dspark style or .toml. Default: ./.env.dspark or "
            "./flashspark.toml when present, or $FLASHSPARK_CONFIG.",
        ),
        click.option("--profile", default=None, help="Serving profile (see `flashspark profiles`)."),
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override one setting (MAX_NUM_SEQS=4 or engine.max_num_seqs=4). Repeatable.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def find_config(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    from_env = os.environ.get("FLASHSPARK_CONFIG")
    if from_env:
        return Path(from_env)
    for name in DEFAULT_CONFIG_NAMES:
        if Path(name).is_file():
            return Path(name)
    return None


def load_recipe(
    config: Path | None, profile: str | None, sets: tuple[str, ...], *, strict: bool = True
) -> ResolvedRecipe:
    return resolve_recipe(profile=profile, config=find_config(config), sets=sets, strict=strict)


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="flashspark")
def main() -> None:
    """FlashSpark serves DeepSeek-V4-Flash-DSpark on DGX Spark clusters with vLLM.

    \b
    The recipe (a profile plus your cluster file) becomes a per-node launch
    plan; FlashSpark launches it, validates it and benchmarks it.
    Start here:
      flashspark profiles                 the serving profiles and what they are for
      flashspark config init              write a commented cluster file (.env.dspark)
      flashspark config check             check it: every problem, with its fix
      flashspark config render --out DIR  the exact vllm argv, env and compose per node
    """


@main.command("profiles")
@click.argument("name", required=False)
@json_option
@handle_errors
def profiles_command(name: str | None, as_json: bool) -> None:
    """List the shipped profiles, or show one with every flag and env group it sets."""
    if name is None:
        rows = []
        for profile in profile_names():
            tree = load_profile_tree(profile)
            engine = tree.get("engine", {})
            rows.append(
                {
                    "name": profile,
                    "summary": tree.get("profile", {}).get("summary", ""),
                    "max_model_len": engine.get("max_model_len"),
                    "max_num_seqs": engine.get("max_num_seqs"),
                    "kv_cache_dtype": engine.get("kv_cache_dtype"),
                    "speculative": tree.get("speculative", {}).get("method"),
                }
            )
        if as_json:
            console.print_json({"profiles": rows})
        else:
            console.print_profiles(rows)
        return
    resolved = resolve_recipe(profile=name, strict=False)
    if as_json:
        console.print_json(resolved.recipe.public_dict())
    else:
        console.print_profile(resolved.recipe)


@main.group("config")
def config_group() -> None:
    """Write, check and render the cluster configuration."""


@config_group.command("init")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False), default=".env.dspark")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["env", "toml"]),
    default=None,
    help="env (.env.dspark style) or toml; default from the file name.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@json_option
@handle_errors
def config_init(path: Path, fmt: str | None, force: bool, as_json: bool) -> None:
    """Write a commented cluster file template to PATH (default .env.dspark)."""
    fmt = fmt or ("toml" if path.suffix == ".toml" else "env")
    if path.exists() and not force:
        raise FlashsparkError(
            f"{path} exists already",
            where=str(path),
            fix="pass --force to overwrite it, or pick another path",
        )
    write_atomic(path, config_template(fmt), mode=0o600)
    if as_json:
        console.print_json({"written": str(path), "format": fmt})
    else:
        console.print_plain(
            f"wrote {path} ({fmt}); fill in the placeholders, then run `flashspark config check --env {path}`"
        )


@config_group.command("check")
@recipe_options
@json_option
@handle_errors
def config_check(config: Path | None, profile: str | None, sets: tuple[str, ...], as_json: bool) -> None:
    """Check the recipe: exit 0 when valid, 2 with every problem and its fix when not."""
    try:
        resolved = load_recipe(config, profile, sets, strict=False)
    except RecipeInvalid as invalid:
        # Type errors stop resolution before the rules run; report them the same way.
        if as_json:
            console.print_json(console.check_payload(None, invalid.problems))
        else:
            console.print_problems(invalid.problems)
        sys.exit(exit_codes.CONFIG)
    if as_json:
        console.print_json(console.check_payload(resolved, resolved.problems))
    else:
        console.print_check(resolved)
    if resolved.errors:
        sys.exit(exit_codes.CONFIG)


@config_group.command("render")
@recipe_options
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write plan.json and per-node command.sh / compose.yaml into DIR.",
)
@json_option
@handle_errors
def config_render(
    config: Path | None, profile: str | None, sets: tuple[str, ...], out: Path | None, as_json: bool
) -> None:
    """Render the per-node launch plan: the exact vllm argv, env and compose file."""
    resolved = load_recipe(config, profile, sets)
    plan = render_plan(resolved.recipe)
    written = write_plan_files(plan, out) if out is not None else []
    if as_json:
        payload: dict[str, Any] = json.loads(plan.model_dump_json())
        payload["written"] = [str(p) for p in written]
        console.print_json(payload)
    else:
        console.print_plan(plan, written)
        console.print_problems(resolved.warnings, heading="warnings")


if __name__ == "__main__":  # pragma: no cover
    main()
