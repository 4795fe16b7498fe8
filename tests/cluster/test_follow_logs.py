"""`logs --follow` across nodes: lines from every node as they are written, masked, and no follower left behind."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from flashspark.cluster.observe import follow_logs
from flashspark.cluster.state import DeploymentState, NodeProcess, state_path, write_state
from flashspark.recipe import resolve_recipe
from tests.cluster.conftest import NetnsCluster

pytestmark = pytest.mark.cluster
SECRET = "sk-follow-0123456789"


def test_lines_from_both_nodes_arrive_masked_and_the_remote_tails_end(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    nodes = netns_cluster.nodes_toml()
    toml = tmp_path / "c.toml"
    toml.write_text(
        f'profile = "local-cpu"\n[parallel]\ntensor_parallel_size = 2\n[api]\napi_key = "{SECRET}"\n'
        f'[cluster]\nname = "follow"\nmaster_addr = "{netns_cluster.nodes[0].address}"\n' + nodes
    )
    recipe = resolve_recipe(config=toml, environ={"FLASHSPARK_HOME": str(tmp_path / "home")}, strict=False).recipe
    logs = [tmp_path / f"{n.name}.log" for n in netns_cluster.nodes]
    for log in logs:
        log.write_text("old line\n")
    processes = [
        NodeProcess(node=n.name, rank=rank, pid=1, pgid=1, log_path=str(log))
        for rank, (n, log) in enumerate(zip(netns_cluster.nodes, logs, strict=True))
    ]
    write_state(
        state_path(recipe), DeploymentState.started(recipe, run_dir=str(tmp_path), base_url="x", nodes=processes)
    )

    async def follow() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        stream = follow_logs(recipe)

        async def collect() -> None:
            async for item in stream:
                seen.append(item)
                if len(seen) == 2:
                    return

        task = asyncio.create_task(collect())
        await asyncio.sleep(1.5)  # the followers are connected and at the end of each file
        for log in logs:
            with open(log, "a") as handle:
                handle.write(f"new line from {log.stem} Bearer {SECRET}\n")
        await asyncio.wait_for(task, timeout=30)
        await stream.aclose()
        return seen

    seen = asyncio.run(follow())
    assert sorted(seen) == [
        ("node1", "new line from node1 Bearer ***"),
        ("node2", "new line from node2 Bearer ***"),
    ]
    left = subprocess.run(["pgrep", "-f", f"tail -n 0 -F {tmp_path}"], capture_output=True, text=True, check=False)
    for _ in range(20):
        if not left.stdout.strip():
            break
        asyncio.run(asyncio.sleep(0.25))
        left = subprocess.run(["pgrep", "-f", f"tail -n 0 -F {tmp_path}"], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == ""  # the remote followers ended with their connections
