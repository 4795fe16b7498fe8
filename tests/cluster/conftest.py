"""Real nodes on this machine: network namespaces on a bridge, each with its own hostname and sshd.

Created once per session and removed at the end; needs root, iproute2 and
openssh-server (scripts/test.sh installs the latter). Addresses are in a /24 of
10.251.0.0/16 chosen per session, reachable only inside this machine.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flashspark.cluster.transport import SshTarget


@dataclass
class NetnsNode:
    name: str
    namespace: str
    address: str
    target: SshTarget


@dataclass
class NetnsCluster:
    nodes: list[NetnsNode]
    client_key: Path
    known_hosts: Path
    subnet: str
    control_dir: Path


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def netns_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    if os.geteuid() != 0 or not shutil.which("ip") or not Path("/usr/sbin/sshd").exists():
        pytest.fail("the cluster tests need root, iproute2 and openssh-server (scripts/test.sh installs them)")
    work = tmp_path_factory.mktemp("netns")
    tag = f"{random.randrange(16**4):04x}"
    octet = random.randrange(2, 250)
    subnet = f"10.251.{octet}"
    bridge = f"fsbr{tag}"
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "hostkey"))
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "clientkey"))
    shutil.copy(work / "clientkey.pub", work / "authorized_keys")
    (work / "sshd_config").write_text(
        f"Port 22\nListenAddress 0.0.0.0\nHostKey {work}/hostkey\nAuthorizedKeysFile {work}/authorized_keys\n"
        "PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"
        "MaxStartups 100\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    host_key = (work / "hostkey.pub").read_text().split()
    known = work / "known_hosts"
    control = work / "control"
    control.mkdir()
    _sh("ip", "link", "add", bridge, "type", "bridge")
    _sh("ip", "addr", "add", f"{subnet}.1/24", "dev", bridge)
    _sh("ip", "link", "set", bridge, "up")
    nodes: list[NetnsNode] = []
    daemons: list[subprocess.Popen[bytes]] = []
    logs = []
    namespaces: list[str] = []
    try:
        for index in (1, 2):
            ns, veth, address = f"fs{tag}n{index}", f"fs{tag}v{index}", f"{subnet}.{10 + index}"
            _sh("ip", "netns", "add", ns)
            namespaces.append(ns)
            _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "link", "set", veth, "master", bridge, "up")
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            logs.append(open(work / f"sshd{index}.log", "wb"))  # noqa: SIM115 - closed at teardown
            daemons.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "unshare",
                        "--uts",
                        "sh",
                        "-c",
                        f"hostname node{index}; exec /usr/sbin/sshd -D -e -f {work}/sshd_config",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=logs[-1],
                )
            )
            with open(known, "a") as handle:
                handle.write(f"{address} {host_key[0]} {host_key[1]}\n")
            target = SshTarget(
                host=f"root@{address}",
                identity=str(work / "clientkey"),
                known_hosts=str(known),
                connect_timeout_s=5,
                control_dir=str(control),
            )
            nodes.append(NetnsNode(f"node{index}", ns, address, target))
        deadline = time.monotonic() + 20
        while not all(_port_open(n.address, 22) for n in nodes):
            if time.monotonic() > deadline:
                pytest.fail("sshd did not come up in the namespaces: " + (work / "sshd1.log").read_text()[-500:])
            time.sleep(0.05)
        yield NetnsCluster(nodes, work / "clientkey", known, subnet, control)
    finally:
        for daemon in daemons:
            daemon.terminate()
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
        for log in logs:
            log.close()
        subprocess.run(["pkill", "-f", f"ControlPath={control}"], check=False, capture_output=True)
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
