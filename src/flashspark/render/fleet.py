"""The fleet plan: every replica's own launch plan, and the router in front of them.

The router is vLLM's (PyPI vllm-router, a Rust binary): it starts once every replica serves, is
told each replica's URL, checks their /health itself and takes a replica out of the rotation
after `health_failure_threshold` failed checks. It always runs as a process on its node (one
static binary; there is no image to pull), whatever runtime the replicas use.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from flashspark.files import write_atomic, write_json
from flashspark.recipe.model import Frozen, Recipe
from flashspark.recipe.replicas import replicas_of, router_node
from flashspark.render.addresses import router_url, worker_url
from flashspark.render.envfiles import comment_line
from flashspark.render.files import write_plan_files
from flashspark.render.launch import LaunchPlan, NodeLaunch, render_plan

FLEET_SCHEMA_VERSION = 1
# A replica is serving before the router starts; a longer wait would hide one that is not.
WORKER_STARTUP_S = 120


class ReplicaPlan(Frozen):
    name: str
    deployment: str
    worker_url: str = Field(description="Where the router reaches the replica's API.")
    plan: LaunchPlan


class FleetPlan(Frozen):
    schema_version: int = FLEET_SCHEMA_VERSION
    deployment: str
    profile: str
    router_url: str = Field(description="The endpoint clients use (…/v1).")
    router_metrics_url: str = Field(description="The router's Prometheus endpoint: per-replica counts and health.")
    router: NodeLaunch
    replicas: list[ReplicaPlan]


def router_argv(recipe: Recipe) -> list[str]:
    router = recipe.router
    urls = [worker_url(replica.recipe) for replica in replicas_of(recipe)]
    return [
        router.router_bin,
        "--host",
        router.host,
        "--port",
        str(router.port),
        "--worker-urls",
        *urls,
        "--policy",
        router.policy,
        "--health-check-interval-secs",
        str(router.health_check_interval_s),
        "--health-failure-threshold",
        str(router.health_failure_threshold),
        "--health-success-threshold",
        str(router.health_success_threshold),
        "--worker-startup-timeout-secs",
        str(WORKER_STARTUP_S),
        "--worker-startup-check-interval",
        "1",
        # Counters only (requests per worker, health), on the router's own address: the bench reads them
        # for per-replica results.
        "--prometheus-host",
        router.host,
        "--prometheus-port",
        str(router.metrics_port),
    ]


def render_router(recipe: Recipe) -> NodeLaunch:
    node = router_node(recipe)
    return NodeLaunch(
        rank=[n.name for n in recipe.nodes].index(node.name),
        name=node.name,
        role="router",
        ssh=node.ssh,
        headless=False,
        argv=router_argv(recipe),
        env={},
    )


def router_metrics_url(recipe: Recipe) -> str:
    return router_url(recipe).removesuffix("/v1").rsplit(":", 1)[0] + f":{recipe.router.metrics_port}/metrics"


def render_fleet(recipe: Recipe) -> FleetPlan:
    """Each replica's launch plan and the router's, for a recipe with [[replicas]]."""
    return FleetPlan(
        deployment=recipe.cluster.name,
        profile=recipe.profile.name,
        router_url=router_url(recipe),
        router_metrics_url=router_metrics_url(recipe),
        router=render_router(recipe),
        replicas=[
            ReplicaPlan(
                name=replica.name,
                deployment=replica.recipe.cluster.name,
                worker_url=worker_url(replica.recipe),
                plan=render_plan(replica.recipe),
            )
            for replica in replicas_of(recipe)
        ],
    )


def write_fleet_files(fleet: FleetPlan, out: Path) -> list[Path]:
    """fleet.json, each replica's plan under replica-<name>/, the router's command under router/."""
    written = [out / "fleet.json"]
    write_json(written[0], fleet.model_dump(mode="json"))
    for replica in fleet.replicas:
        written += write_plan_files(replica.plan, out / f"replica-{replica.name}")
    command = out / "router" / "command.sh"
    text = "#!/bin/sh\n" + comment_line(f"{fleet.deployment}: the router on {fleet.router.ssh}") + "\n"
    write_atomic(command, text + "exec " + fleet.router.command_line() + "\n", mode=0o755)
    return [*written, command]
