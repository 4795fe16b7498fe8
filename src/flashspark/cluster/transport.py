"""Running commands on nodes: the node FlashSpark runs on, or any other over the OpenSSH client.

Every command is an argv list. Over SSH the remote argv becomes one string in
exactly one place (`ssh_argv`, with `shlex.join`), because ssh concatenates
its remote arguments and a second layer of quoting is where injection bugs
live. Host keys are checked (`accept-new` only when asked), BatchMode means a
missing key fails at once instead of prompting, and connections are reused
(ControlMaster) so a status over many nodes does not pay the handshake each
time. Files are written atomically and owner-only (temp file, then rename).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from flashspark.cluster.timeouts import TIMEOUTS
from flashspark.errors import ClusterError, NodeUnreachable
from flashspark.recipe.model import Node

SSH_UNREACHABLE = 255
# Variables of the caller's shell that must not reach an engine started on this machine:
# another virtual environment's paths would shadow the engine's own packages.
LOCAL_ENV_DROPPED = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
LOCAL_ENV_DROPPED_PREFIX = "FLASHSPARK_"


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Transport(Protocol):
    """Where a node's commands run."""

    name: str

    async def run(
        self, argv: list[str], *, stdin: bytes | None = None, timeout_s: float = TIMEOUTS.command_s
    ) -> CommandResult: ...

    async def write_file(self, path: str, content: str, *, mode: int = 0o600) -> None: ...

    def local_argv(self, argv: list[str]) -> list[str]:
        """The argv to run here so that argv runs on the node (for long-running streams)."""
        ...


@dataclass(frozen=True)
class SshTarget:
    """How to reach one node with the OpenSSH client."""

    host: str  # [user@]host
    port: int | None = None
    identity: str | None = None
    connect_timeout_s: int = TIMEOUTS.ssh_connect_s
    accept_new_host_keys: bool = False
    known_hosts: str | None = None
    control_dir: str | None = None
    options: tuple[str, ...] = field(default_factory=tuple)


def ssh_argv(target: SshTarget, remote_argv: list[str]) -> list[str]:
    """The local `ssh ...` argv that runs remote_argv on the target, quoted once."""
    argv = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={target.connect_timeout_s}",
        "-o",
        f"StrictHostKeyChecking={'accept-new' if target.accept_new_host_keys else 'yes'}",
    ]
    if target.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={target.known_hosts}"]
    if target.control_dir:
        digest = hashlib.sha1(f"{target.host}:{target.port}".encode()).hexdigest()[:12]
        argv += [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={target.control_dir}/{digest}",
            "-o",
            "ControlPersist=60",
        ]
    if target.port:
        argv += ["-p", str(target.port)]
    if target.identity:
        argv += ["-i", target.identity, "-o", "IdentitiesOnly=yes"]
    for option in target.options:
        argv += ["-o", option]
    return [*argv, "--", target.host, shlex.join(remote_argv)]


def local_environ() -> dict[str, str]:
    """This process's environment, less what must not leak into what it starts on this node."""
    return {
        k: v for k, v in os.environ.items() if k not in LOCAL_ENV_DROPPED and not k.startswith(LOCAL_ENV_DROPPED_PREFIX)
    }


async def run_argv(
    argv: list[str], *, stdin: bytes | None, timeout_s: float, env: dict[str, str] | None = None
) -> CommandResult:
    """Run argv to completion and collect its output, without blocking the event loop.

    The standard library's subprocess (in a thread), not the event loop's: it closes every other
    descriptor in the child. uvloop's spawn leaves the original descriptors of the output pipes
    open, so a process the command leaves running (a detached engine, an ssh control master)
    would hold the pipe and the read would never end.
    """
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    reading = asyncio.ensure_future(asyncio.to_thread(process.communicate, stdin, timeout_s))
    try:
        out, err = await asyncio.shield(reading)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.communicate)
        return CommandResult(
            argv, -9, "", f"timed out after {timeout_s:g} s", time.monotonic() - started, timed_out=True
        )
    except asyncio.CancelledError:
        # The reading thread cannot be cancelled: kill the command and let the thread reach EOF, which
        # closes the pipes and reaps the process, rather than leave both to the garbage collector.
        process.kill()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(reading, 5)
        raise
    return CommandResult(
        argv,
        process.returncode or 0,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        time.monotonic() - started,
    )


async def pipe_between(
    source: Transport, source_argv: list[str], target: Transport, target_argv: list[str]
) -> str | None:
    """source_argv's stdout on one node streamed into target_argv's stdin on another, through an OS
    pipe here (no temp file, no node-to-node ssh trust). None when both ended well, else their stderr."""
    read_end, write_end = os.pipe()
    try:
        producer = await asyncio.create_subprocess_exec(
            *source.local_argv(source_argv), stdout=write_end, stderr=asyncio.subprocess.PIPE
        )
        consumer = await asyncio.create_subprocess_exec(
            *target.local_argv(target_argv),
            stdin=read_end,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    (_, produced_err), (_, consumed_err) = await asyncio.gather(producer.communicate(), consumer.communicate())
    if not producer.returncode and not consumer.returncode:
        return None
    return (produced_err or consumed_err).decode(errors="replace").strip()[-400:]


def _atomic_write_argv(path: str, mode: int) -> list[str]:
    directory = str(Path(path).parent)
    script = 'umask 077 && mkdir -p "$1" && tmp="$2.tmp.$$" && cat > "$tmp" && chmod "$3" "$tmp" && mv -f "$tmp" "$2"'
    return ["sh", "-c", script, "flashspark-write", directory, path, f"{mode:o}"]


class LocalTransport:
    """The node FlashSpark runs on (its commands get `local_environ()`, as a login would)."""

    name = "local"

    async def run(
        self, argv: list[str], *, stdin: bytes | None = None, timeout_s: float = TIMEOUTS.command_s
    ) -> CommandResult:
        return await run_argv(argv, stdin=stdin, timeout_s=timeout_s, env=local_environ())

    def local_argv(self, argv: list[str]) -> list[str]:
        return list(argv)

    async def write_file(self, path: str, content: str, *, mode: int = 0o600) -> None:
        result = await self.run(_atomic_write_argv(path, mode), stdin=content.encode())
        if not result.ok:
            raise ClusterError(f"cannot write {path}: {result.stderr.strip()}", where=path)


class SshTransport:
    """A node reached with the OpenSSH client."""

    def __init__(self, name: str, target: SshTarget) -> None:
        self.name = name
        self.target = target

    def local_argv(self, argv: list[str]) -> list[str]:
        return ssh_argv(self.target, argv)

    async def run(
        self, argv: list[str], *, stdin: bytes | None = None, timeout_s: float = TIMEOUTS.command_s
    ) -> CommandResult:
        result = await run_argv(ssh_argv(self.target, argv), stdin=stdin, timeout_s=timeout_s)
        if result.returncode == SSH_UNREACHABLE:
            raise NodeUnreachable(
                f"node {self.name!r} ({self.target.host}) is unreachable: {result.stderr.strip()[-300:]}",
                key="ssh",
                value=self.target.host,
                where=self.name,
                fix="check the address, that sshd runs there and that your key is in its authorized_keys "
                "(FlashSpark uses BatchMode: it never prompts)",
            )
        return result

    async def write_file(self, path: str, content: str, *, mode: int = 0o600) -> None:
        result = await self.run(_atomic_write_argv(path, mode), stdin=content.encode())
        if not result.ok:
            raise ClusterError(f"cannot write {path} on {self.name}: {result.stderr.strip()}", where=self.name)


def transport_for(node: Node, *, control_dir: str | None = None) -> Transport:
    """The transport a node's `ssh` setting names: `local`, or OpenSSH to [user@]host."""
    if node.ssh == "local":
        return LocalTransport()
    return SshTransport(
        node.name,
        SshTarget(
            host=node.ssh,
            port=node.ssh_port,
            identity=node.ssh_identity,
            options=tuple(node.ssh_options),
            control_dir=control_dir,
        ),
    )
