"""NCCL_IB_GID_INDEX=auto: the RoCE v2 GID of the node's fabric IP, read from sysfs, the same on every node."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flashspark.cluster.gid import ipv4_mapped_gid, parse_gid_listing, pick_gid_index, resolve_gid
from flashspark.cluster.preflight import GID_CHECK, NodeCheck, gid_agreement
from flashspark.cluster.transport import SshTransport
from tests.cluster.conftest import NetnsCluster

LINK_LOCAL = "fe80:0000:0000:0000:4e5d:3cff:fe01:0203"


def fake_sysfs(root: Path, device: str, gids: list[tuple[str, str | None]]) -> Path:
    """The kernel's layout: DEV/ports/1/gids/I and DEV/ports/1/gid_attrs/types/I (unset types unreadable)."""
    port = root / device / "ports" / "1"
    (port / "gids").mkdir(parents=True)
    (port / "gid_attrs" / "types").mkdir(parents=True)
    for index, (gid, kind) in enumerate(gids):
        (port / "gids" / str(index)).write_text(gid + "\n")
        if kind is not None:
            (port / "gid_attrs" / "types" / str(index)).write_text(kind + "\n")
    return root


def test_ipv4_mapped_form_matches_the_kernels() -> None:
    assert ipv4_mapped_gid("10.0.0.1") == "0000:0000:0000:0000:0000:ffff:0a00:0001"
    assert ipv4_mapped_gid("192.168.100.11") == "0000:0000:0000:0000:0000:ffff:c0a8:640b"


def test_the_roce_v2_entry_of_the_address_wins_over_v1_and_other_addresses() -> None:
    ip = "192.168.100.11"
    listing = "\n".join(
        [
            f"rocep1s0f1/ports/1/gids/0:{LINK_LOCAL}",
            "rocep1s0f1/ports/1/gid_attrs/types/0:IB/RoCE v1",
            f"rocep1s0f1/ports/1/gids/1:{LINK_LOCAL}",
            "rocep1s0f1/ports/1/gid_attrs/types/1:RoCE v2",
            f"rocep1s0f1/ports/1/gids/2:{ipv4_mapped_gid(ip)}",
            "rocep1s0f1/ports/1/gid_attrs/types/2:IB/RoCE v1",
            f"rocep1s0f1/ports/1/gids/3:{ipv4_mapped_gid(ip)}",
            "rocep1s0f1/ports/1/gid_attrs/types/3:RoCE v2",
            f"rocep1s0f1/ports/1/gids/4:{ipv4_mapped_gid('192.168.100.12')}",
            "rocep1s0f1/ports/1/gid_attrs/types/4:RoCE v2",
        ]
    )
    entry = pick_gid_index(parse_gid_listing(listing), ip)
    assert entry is not None and (entry.device, entry.index) == ("rocep1s0f1", 3)
    assert pick_gid_index(parse_gid_listing(listing), ip, hcas=["mlx5_0:1"]) is None  # another HCA named


def test_nodes_that_resolve_different_indexes_are_refused() -> None:
    agree = [NodeCheck("n1", GID_CHECK, True, value="3"), NodeCheck("n2", GID_CHECK, True, value="3")]
    assert gid_agreement(agree) == []
    disagree = [NodeCheck("n1", GID_CHECK, True, value="3"), NodeCheck("n2", GID_CHECK, True, value="1")]
    [refusal] = gid_agreement(disagree)
    assert not refusal.ok and refusal.detail == "n1=3, n2=1" and "same order" in refusal.fix


@pytest.mark.cluster
def test_each_node_reads_its_own_sysfs_over_ssh(netns_cluster: NetnsCluster, tmp_path: Path) -> None:
    node = netns_cluster.nodes[1]
    root = fake_sysfs(
        tmp_path / "infiniband",
        "rocep1s0f1",
        [
            (LINK_LOCAL, "IB/RoCE v1"),
            (LINK_LOCAL, "RoCE v2"),
            (ipv4_mapped_gid(node.address), "IB/RoCE v1"),
            (ipv4_mapped_gid(node.address), "RoCE v2"),
            ("0000:0000:0000:0000:0000:0000:0000:0000", None),  # unused slot: its type cannot be read
        ],
    )
    transport = SshTransport(node.name, node.target)
    entry, detail = asyncio.run(resolve_gid(transport, node.address, ["rocep1s0f1"], root=str(root)))
    assert entry is not None and entry.index == 3, detail
    missing, why = asyncio.run(resolve_gid(transport, node.address, root=str(tmp_path / "absent")))
    assert missing is None and "no RDMA devices" in why


@pytest.mark.cluster
def test_auto_on_nodes_without_rdma_fails_preflight_naming_each_node(
    netns_cluster: NetnsCluster, tmp_path: Path
) -> None:
    from tests.cluster.test_preflight import cluster_toml, preflight

    toml = cluster_toml(netns_cluster, tmp_path / "c.toml")
    toml.write_text(
        toml.read_text().replace('socket_ifname = "eth0"\n', 'socket_ifname = "eth0"\ngid_index = "auto"\n')
    )
    code, report = preflight(toml)
    failed = [(c["node"], c["check"]) for c in report["checks"] if not c["ok"]]
    assert code == 5 and failed == [("node1", GID_CHECK), ("node2", GID_CHECK)]
    assert all("no RDMA devices" in c["detail"] for c in report["checks"] if c["check"] == GID_CHECK)
