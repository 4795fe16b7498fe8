"""The SSH transport against real sshd in network namespaces (marker: cluster)."""

from __future__ import annotations

import asyncio
import dataclasses
import stat
from pathlib import Path

import pytest

from flashspark.cluster.transport import LocalTransport, NodeUnreachable, SshTarget, SshTransport, ssh_argv
from tests.cluster.conftest import NetnsCluster

pytestmark = pytest.mark.cluster


def transports(cluster: NetnsCluster) -> list[SshTransport]:
    return [SshTransport(node.name, node.target) for node in cluster.nodes]


def test_each_node_runs_its_own_commands(netns_cluster: NetnsCluster) -> None:
    async def hostnames() -> list[str]:
        results = await asyncio.gather(*(t.run(["hostname"]) for t in transports(netns_cluster)))
        return [r.stdout.strip() for r in results]

    assert asyncio.run(hostnames()) == ["node1", "node2"]


def test_arguments_cross_ssh_exactly_once_quoted() -> None:
    tricky = ["printf", "%s|", "a b", "$HOME", "'q'", "; touch /tmp/flashspark-pwned", "*"]
    argv = ssh_argv(SshTarget(host="root@10.0.0.1"), tricky)
    assert argv[-2:] == [
        "root@10.0.0.1",
        "printf '%s|' 'a b' '$HOME' ''\"'\"'q'\"'\"'' '; touch /tmp/flashspark-pwned' '*'",
    ]


def test_tricky_arguments_arrive_verbatim(netns_cluster: NetnsCluster) -> None:
    node = transports(netns_cluster)[0]
    tricky = ["a b", "$HOME", "'q'", "; touch /tmp/flashspark-pwned", "*", '"x"']
    result = asyncio.run(node.run(["printf", "%s|", *tricky]))
    assert result.ok and result.stdout == "|".join(tricky) + "|"
    assert not asyncio.run(node.run(["test", "-e", "/tmp/flashspark-pwned"])).ok


def test_files_are_written_atomically_and_owner_only(netns_cluster: NetnsCluster, tmp_path) -> None:
    node = transports(netns_cluster)[1]
    path = str(tmp_path / "deploy" / "secrets.env")
    asyncio.run(node.write_file(path, "VLLM_API_KEY=sk-test\n"))
    assert (tmp_path / "deploy" / "secrets.env").read_text() == "VLLM_API_KEY=sk-test\n"
    assert stat.S_IMODE((tmp_path / "deploy" / "secrets.env").stat().st_mode) == 0o600
    assert not list((tmp_path / "deploy").glob("*.tmp.*"))


def test_an_unreachable_node_fails_at_once_with_a_fix(netns_cluster: NetnsCluster) -> None:
    node = netns_cluster.nodes[0]
    target = dataclasses.replace(node.target, host=f"root@{netns_cluster.subnet}.99", connect_timeout_s=2)
    with pytest.raises(NodeUnreachable) as caught:
        asyncio.run(SshTransport("ghost", target).run(["true"]))
    assert caught.value.where == "ghost" and "BatchMode" in (caught.value.fix or "")


def test_unknown_host_keys_are_refused_unless_accept_new_is_asked(netns_cluster: NetnsCluster, tmp_path) -> None:
    node = netns_cluster.nodes[1]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strict = dataclasses.replace(node.target, known_hosts=str(empty), control_dir=None)
    with pytest.raises(NodeUnreachable):
        asyncio.run(SshTransport("strict", strict).run(["true"]))
    trusting = dataclasses.replace(strict, accept_new_host_keys=True)
    assert asyncio.run(SshTransport("new", trusting).run(["true"])).ok
    # The key was recorded (hashed host names are the Debian default, so match the key).
    assert node.target.known_hosts is not None
    recorded_key = Path(node.target.known_hosts).read_text().split()[2]
    assert recorded_key in empty.read_text()


def test_local_transport_writes_and_runs(tmp_path) -> None:
    local = LocalTransport()
    asyncio.run(local.write_file(str(tmp_path / "x" / "f"), "hello"))
    assert asyncio.run(local.run(["cat", str(tmp_path / "x" / "f")])).stdout == "hello"
