"""RoCE GID index from sysfs, for NCCL_IB_GID_INDEX=auto.

A RoCE port lists its GIDs in /sys/class/infiniband/DEV/ports/P/gids/I and
their kinds in .../gid_attrs/types/I ("IB/RoCE v1" or "RoCE v2"). NCCL wants
the index of the RoCE v2 GID that carries the node's fabric IPv4 address (the
IPv4-mapped form ::ffff:a.b.c.d). The index depends on the order addresses
were configured, so it can differ between nodes; NCCL needs it to be the same
on every rank, hence preflight refuses nodes that disagree.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from flashspark.cluster.transport import Transport

SYSFS_INFINIBAND = "/sys/class/infiniband"
# One grep per node: "path:value" for every GID and type; unset entries fail to read (EINVAL)
# and are skipped, which is why stderr is ignored.
GID_LISTING = (
    'cd "$1" 2>/dev/null || exit 3; grep -H . */ports/*/gids/* */ports/*/gid_attrs/types/* 2>/dev/null; exit 0'
)


@dataclass(frozen=True)
class GidEntry:
    device: str
    port: int
    index: int
    gid: str
    kind: str


def parse_gid_listing(text: str) -> list[GidEntry]:
    """Entries from `grep -H . DEV/ports/P/gids/I DEV/ports/P/gid_attrs/types/I` output."""
    gids: dict[tuple[str, int, int], str] = {}
    kinds: dict[tuple[str, int, int], str] = {}
    for line in text.splitlines():
        path, _, value = line.partition(":")
        parts = path.split("/")
        if len(parts) < 5 or parts[1] != "ports" or not parts[-1].isdigit():
            continue
        key = (parts[0], int(parts[2]), int(parts[-1]))
        if parts[3] == "gids":
            gids[key] = value.strip()
        elif parts[3] == "gid_attrs" and parts[4] == "types":
            kinds[key] = value.strip()
    return [GidEntry(d, p, i, gid, kinds.get((d, p, i), "")) for (d, p, i), gid in sorted(gids.items())]


def ipv4_mapped_gid(ip: str) -> str:
    """The GID sysfs shows for an IPv4 address: 0000:0000:0000:0000:0000:ffff:0a00:0001 for 10.0.0.1."""
    packed = ipaddress.IPv4Address(ip).packed
    words = ["0000"] * 5 + ["ffff", packed[:2].hex(), packed[2:].hex()]
    return ":".join(words)


def pick_gid_index(entries: list[GidEntry], ip: str, hcas: list[str] | None = None) -> GidEntry | None:
    """The RoCE v2 GID of `ip` on the named HCAs (NCCL_IB_HCA names, ports after ':' ignored)."""
    wanted = ipv4_mapped_gid(ip)
    allowed = {h.split(":")[0].lstrip("=^") for h in hcas or [] if h}
    for entry in entries:
        if allowed and entry.device not in allowed:
            continue
        if entry.gid == wanted and entry.kind == "RoCE v2":
            return entry
    return None


async def resolve_gid(
    transport: Transport, ip: str, hcas: list[str] | None = None, *, root: str = SYSFS_INFINIBAND
) -> tuple[GidEntry | None, str]:
    """(the entry, a description of what was found) for one node."""
    result = await transport.run(["sh", "-c", GID_LISTING, "flashspark-gids", root])
    if result.returncode == 3:
        return None, f"no {root} on this node (no RDMA devices)"
    entries = parse_gid_listing(result.stdout)
    found = pick_gid_index(entries, ip, hcas)
    if found is not None:
        return found, f"{found.device} port {found.port} index {found.index} ({found.gid})"
    v2 = [e for e in entries if e.kind == "RoCE v2"]
    return None, f"no RoCE v2 GID for {ip} among {len(v2)} RoCE v2 GIDs of {len(entries)}"
