"""`flashspark profiles` and `flashspark config init|check|render`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flashspark.cli import console, exit_codes
from flashspark.cli.common import fail, handle_errors, json_option, load_recipe, recipe_options
from flashspark.cli.console import escape, print_problems
from flashspark.errors import InputError, RecipeInvalid

if TYPE_CHECKING:
    from flashspark.recipe import Recipe, ResolvedRecipe
    from flashspark.render import LaunchPlan


@click.command("profiles")
@click.argument("name", required=False)
@json_option
@handle_errors
def profiles_command(name: str | None, as_json: bool) -> None:
    """List the shipped profiles, or show one with every flag and env group it sets."""
    from flashspark.recipe import profile_summaries, resolve_recipe

    if name is None:
        rows = profile_summaries()
        if as_json:
            console.print_json({"profiles": [row.model_dump() for row in rows]})
        else:
            print_profiles([row.model_dump() for row in rows])
        return
    resolved = resolve_recipe(profile=name, strict=False)
    if as_json:
        console.print_json(resolved.recipe.public_dict())
    else:
        print_profile(resolved.recipe)


@click.group("config")
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
    """Write a commented cluster file template to PATH (default .env.dspark).

    Only the placeholders you must fill in are values; every default is shown as a comment.
    """
    from flashspark.files import write_atomic
    from flashspark.recipe import DEFAULT_PROFILE, resolve_recipe
    from flashspark.recipe.template import config_template

    fmt = fmt or ("toml" if path.suffix == ".toml" else "env")
    if path.exists() and not force:
        raise InputError(
            f"{path} exists already", where=str(path), fix="pass --force to overwrite it, or pick another path"
        )
    defaults = resolve_recipe(profile=DEFAULT_PROFILE, strict=False).recipe
    write_atomic(path, config_template(fmt, defaults), mode=0o600)
    if as_json:
        console.print_json({"written": str(path), "format": fmt})
    else:
        console.print_plain(
            f"wrote {path} ({fmt}); fill in the placeholders, then run `flashspark config check --env {path}`",
            err=True,
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
            print_problems(invalid.problems)
        fail(exit_codes.CONFIG)
    if as_json:
        console.print_json(console.check_payload(resolved, resolved.problems))
    else:
        print_check(resolved)
    if resolved.errors:
        fail(exit_codes.CONFIG)


@config_group.command("render")
@recipe_options
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write plan.json, per-node command.sh / compose.yaml, and monitoring/ (Prometheus scrape config, "
    "alert rules, Grafana dashboard) into DIR.",
)
@json_option
@handle_errors
def config_render(
    config: Path | None, profile: str | None, sets: tuple[str, ...], out: Path | None, as_json: bool
) -> None:
    """Render the per-node launch plan: the exact vllm argv, env and compose file."""
    from flashspark.render import render_plan
    from flashspark.render.files import write_plan_files
    from flashspark.render.monitoring import render_monitoring

    resolved = load_recipe(config, profile, sets)
    if resolved.recipe.replicas:
        render_fleet_command(resolved, out, as_json)
        return
    plan = render_plan(resolved.recipe)
    written = write_plan_files(plan, out, render_monitoring(resolved.recipe)) if out is not None else []
    if as_json:
        payload: dict[str, Any] = plan.model_dump(mode="json")
        payload["written"] = [str(p) for p in written]
        console.print_json(payload)
    else:
        print_plan(plan, written)
        print_problems(resolved.warnings, heading="warnings")


def render_fleet_command(resolved: ResolvedRecipe, out: Path | None, as_json: bool) -> None:
    """`config render` of a recipe with [[replicas]]: each replica's plan, then the router's argv."""
    from flashspark.render.fleet import render_fleet, write_fleet_files

    fleet = render_fleet(resolved.recipe)
    written = write_fleet_files(fleet, out) if out is not None else []
    if as_json:
        payload: dict[str, Any] = fleet.model_dump(mode="json")
        payload["written"] = [str(p) for p in written]
        console.print_json(payload)
        return
    for replica in fleet.replicas:
        console.out.print(
            f"[bold]replica {escape(replica.name)}[/] (router reaches it at {escape(replica.worker_url)})"
        )
        print_plan(replica.plan, [])
        console.out.print("")
    console.out.print(
        f"[bold]router[/] on {escape(fleet.router.name)} ({escape(fleet.router.ssh)}): {fleet.router_url}"
    )
    console.out.print(f"  [dim]$[/] {escape(fleet.router.command_line())}")
    if written:
        console.out.print("\nwrote " + ", ".join(str(p) for p in written))
    print_problems(resolved.warnings, heading="warnings")


def print_check(resolved: ResolvedRecipe) -> None:
    recipe = resolved.recipe
    print_problems(resolved.problems)
    if resolved.errors:
        console.err.print(f"[bold red]{len(resolved.errors)} error(s)[/]: the recipe is not usable yet.")
        return
    table = console.table(title=f"profile {recipe.profile.name}: {recipe.profile.summary}", show_header=False)
    table.add_column("setting")
    table.add_column("value")
    table.add_column("from", style="dim")
    rows = [
        ("nodes", ", ".join(f"{n.name} ({n.ssh})" for n in recipe.nodes), "nodes"),
        ("model", recipe.model.id, "model.id"),
        ("served as", recipe.model.served_name, "model.served_name"),
        ("max_model_len", recipe.engine.max_model_len, "engine.max_model_len"),
        ("max_num_seqs", recipe.engine.max_num_seqs, "engine.max_num_seqs"),
        ("kv_cache_dtype", recipe.engine.kv_cache_dtype, "engine.kv_cache_dtype"),
        (
            "speculative",
            recipe.speculative.to_json() if recipe.speculative.enabled else "off",
            "speculative.num_speculative_tokens",
        ),
        (
            "parallel",
            f"TP {recipe.parallel.tensor_parallel_size} x PP {recipe.parallel.pipeline_parallel_size}",
            "parallel.tensor_parallel_size",
        ),
        ("API", f"{recipe.api.host}:{recipe.api.port}", "api.host"),
        ("runtime", recipe.cluster.runtime, "cluster.runtime"),
    ]
    for label, value, path in rows:
        table.add_row(label, escape(str(value)), resolved.origin_of(path))
    console.out.print(table)
    console.out.print("[green]ok[/]: the recipe is valid.")


def print_profiles(rows: Sequence[dict[str, Any]]) -> None:
    table = console.table(title="FlashSpark profiles")
    for column in ("name", "max_model_len", "max_num_seqs", "kv_cache_dtype", "speculative", "summary"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(
                escape(str(row[c]) if row[c] is not None else "-")
                for c in ("name", "max_model_len", "max_num_seqs", "kv_cache_dtype", "speculative", "summary")
            )
        )
    console.out.print(table)
    console.out.print("Show one in full: flashspark profiles NAME")


def print_profile(recipe: Recipe) -> None:
    profile = recipe.profile
    console.out.print(f"[bold]{profile.name}[/]: {escape(profile.summary)}")
    console.out.print(f"\n[bold]evidence[/]\n{escape(profile.evidence.strip())}")
    if profile.decisions:
        console.out.print("\n[bold]decisions[/]")
        for decision in profile.decisions:
            console.out.print(f" - {escape(decision)}")
    console.out.print("\n[bold]settings[/]")
    data = recipe.public_dict()
    for section in ("model", "engine", "speculative", "generation", "parallel", "api", "cluster"):
        values = {k: v for k, v in data[section].items() if v not in (None, [], {}, False)}
        console.out.print(f"  [cyan]{section}[/] {escape(json.dumps(values))}")
    console.out.print("\n[bold]environment groups[/]")
    for group, values in recipe.env.items():
        console.out.print(f"  [cyan]{group}[/]")
        for key, value in values.items():
            console.out.print(f"    {key}={escape(value)}")


def print_plan(plan: LaunchPlan, written: Sequence[Path]) -> None:
    console.out.print(f"[bold]{plan.deployment}[/] ({plan.profile}, {plan.runtime}); API {plan.api_base_url}")
    for node in plan.start_order:
        console.out.print(f"\n[bold]rank {node.rank}[/] {node.name} ({node.role}, {node.ssh})")
        console.out.print(f"  [dim]$[/] {escape(node.command_line())}")
        for key, value in node.env.items():
            console.out.print(f"  [dim]env[/] {key}={escape(value)}")
        for key in node.secret_env:
            console.out.print(f"  [dim]env[/] {key}=<secret, from an owner-only env file>")
        for key, value in node.pending.items():
            console.out.print(f"  [dim]env[/] {key}=<{value}: resolved on the node at launch>")
    if written:
        console.out.print("\nwrote " + ", ".join(str(p) for p in written))
