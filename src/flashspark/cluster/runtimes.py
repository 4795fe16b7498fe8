"""The two ways a node runs its part of the deployment, behind one interface.

`process`: bare-metal vLLM from a virtual environment, started detached in its
own session (so its pid is its process group) with a log file beside an
owner-only env file. `compose`: the node's compose file and an owner-only
secrets file, `docker compose up -d` under a fixed project name; every
container carries our labels so `down` can verify that none is left.

Both are driven over a Transport with argv lists; the shell snippets below
take their values as positional parameters ("$1"), never pasted in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from flashspark.cluster.state import NodeProcess
from flashspark.cluster.timeouts import TIMEOUTS
from flashspark.cluster.transport import Transport
from flashspark.errors import ClusterError
from flashspark.recipe.model import Node, Recipe
from flashspark.render.compose import LABEL_PREFIX, SECRETS_ENV_FILE, SERVICE, project_name
from flashspark.render.envfiles import compose_env_file, posix_env_file
from flashspark.render.files import compose_yaml
from flashspark.render.launch import NodeLaunch

COMPOSE_FILE = "compose.yaml"
# True while a process of group $1 lives. A zombie does not count: an orphaned engine is reaped
# by whatever init the node has, and `kill -0` would call it alive until then.
GROUP_ALIVE = "ps -e -o pgid=,stat= | awk -v g=\"$1\" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'"


class NodeRuntime(Protocol):
    kind: str

    async def start(self, transport: Transport, directory: str, launch: NodeLaunch) -> NodeProcess: ...

    async def alive(self, transport: Transport, process: NodeProcess) -> bool: ...

    async def stop(self, transport: Transport, process: NodeProcess | None, *, grace_s: float) -> list[str]:
        """Stop and verify; return what is still there (empty: clean)."""
        ...

    def log_argv(self, process: NodeProcess, *, lines: int | None, follow: bool, since: str | None) -> list[str]:
        """The command that prints (and with follow, keeps printing) the node's engine log."""
        ...

    async def describe(self, transport: Transport, process: NodeProcess) -> dict[str, object]: ...


def until_stdin_closes(argv: list[str]) -> list[str]:
    """Run argv until our end of the connection goes away.

    A remote `tail -F` outlives the ssh client that started it (nothing signals it
    until it next writes), so the follower also reads its stdin: when we close the
    pipe or ssh drops, `cat` ends and takes the follower with it.
    """
    script = '"$@" & follower=$!; cat >/dev/null; kill "$follower" 2>/dev/null; wait "$follower" 2>/dev/null'
    return ["sh", "-c", script, "flashspark-follow", *argv]


# Create the node's folder owner-only, then insist that it is ours, a real folder and not writable
# by group or others: a folder someone else made (or opened) first could hold an env file we source.
PRIVATE_DIR = (
    'umask 077 && mkdir -p "$1" && [ -d "$1" ] && [ ! -L "$1" ] && [ -O "$1" ] '
    '&& [ -z "$(find "$1" -maxdepth 0 -perm /022)" ]'
)


async def ensure_private_dir(transport: Transport, directory: str, node: str) -> None:
    checked = await transport.run(["sh", "-c", PRIVATE_DIR, "flashspark-private", directory])
    if not checked.ok:
        raise ClusterError(
            f"{directory} on {node} is not a private folder of this user (another owner, a link, or "
            "writable by group or others): nothing was written or started there",
            where=node,
            fix="remove that folder (or make it yours with mode 700), or set the node's checkout_dir "
            "to a folder only you own",
        )


async def read_log(
    runtime: NodeRuntime, transport: Transport, process: NodeProcess, *, lines: int, since: str | None = None
) -> str:
    result = await transport.run(
        runtime.log_argv(process, lines=lines, follow=False, since=since), timeout_s=TIMEOUTS.log_read_s
    )
    return result.stdout if result.ok else result.stdout + result.stderr


@dataclass
class ProcessRuntime:
    """Bare-metal vLLM: `setsid nohup vllm serve ...` with node.env sourced first."""

    recipe: Recipe
    kind: str = "process"

    def vllm_bin(self, node: Node) -> str:
        return node.vllm_bin or self.recipe.cluster.vllm_bin

    async def start(self, transport: Transport, directory: str, launch: NodeLaunch) -> NodeProcess:
        secrets = self.recipe.secret_env(self.recipe.nodes[launch.rank])
        values = {**launch.env, **{k: v for k, v in secrets.items() if k in launch.secret_env}}
        await ensure_private_dir(transport, directory, launch.name)
        await transport.write_file(f"{directory}/node.env", posix_env_file(values))
        # An engine runs the node's vLLM; the router names its own executable.
        binary = launch.argv[0] if launch.role == "router" else self.vllm_bin(self.recipe.nodes[launch.rank])
        argv = [binary, *launch.argv[1:]]
        script = 'cd "$1" && shift && . ./node.env && setsid nohup "$@" > vllm.log 2>&1 < /dev/null & echo $!'
        result = await transport.run(["sh", "-c", script, "flashspark-start", directory, *argv])
        if not result.ok or not result.stdout.strip().isdigit():
            raise ClusterError(f"could not start {launch.name}: {result.stderr.strip()}", where=launch.name)
        pid = int(result.stdout.strip())
        return NodeProcess(
            node=launch.name, rank=launch.rank, runtime="process", pid=pid, pgid=pid, log_path=f"{directory}/vllm.log"
        )

    async def alive(self, transport: Transport, process: NodeProcess) -> bool:
        result = await transport.run(["sh", "-c", GROUP_ALIVE, "flashspark-alive", str(process.pgid)])
        return result.ok

    async def stop(self, transport: Transport, process: NodeProcess | None, *, grace_s: float) -> list[str]:
        """TERM the group, KILL after grace_s (a headless follower ignored TERM here)."""
        if process is None:
            return []
        script = (
            # dash's kill takes no "--": a negative number names the process group.
            f"alive() {{ {GROUP_ALIVE}; }}; "
            'g="$1"; kill -TERM "-$g" 2>/dev/null; i=0; '
            'while alive "$g" && [ "$i" -lt "$2" ]; do sleep 0.2; i=$((i+1)); done; '
            'kill -KILL "-$g" 2>/dev/null; i=0; '
            # killed processes linger until their parent (or init) reaps them: give it 5 s
            'while alive "$g" && [ "$i" -lt 25 ]; do sleep 0.2; i=$((i+1)); done; '
            '! alive "$g"'
        )
        result = await transport.run(
            ["sh", "-c", script, "flashspark-stop", str(process.pgid), str(int(grace_s * 5))],
            timeout_s=grace_s + TIMEOUTS.stop_margin_s,
        )
        return [] if result.ok else [f"process group {process.pgid}"]

    def log_argv(self, process: NodeProcess, *, lines: int | None, follow: bool, since: str | None) -> list[str]:
        # A log file has no timestamps of its own to filter on; --since is a compose feature.
        start = "+1" if lines is None else str(lines)
        if follow:
            return until_stdin_closes(["tail", "-n", start, "-F", process.log_path])
        return ["tail", "-n", start, process.log_path]

    async def describe(self, transport: Transport, process: NodeProcess) -> dict[str, object]:
        running = await self.alive(transport, process)
        members = await transport.run(["ps", "-o", "pid=,comm=", "-g", str(process.pgid)])
        return {
            "state": "running" if running else "exited",
            "pid": process.pid,
            "processes": [line.split(None, 1) for line in members.stdout.splitlines() if line.strip()],
            "vllm_bin": self.vllm_bin(self.recipe.nodes[process.rank]),
        }


@dataclass
class ComposeRuntime:
    """docker compose under the deployment's fixed project name, found again by label."""

    recipe: Recipe
    kind: str = "compose"

    @property
    def project(self) -> str:
        return project_name(self.recipe)

    @property
    def label(self) -> str:
        return f"{LABEL_PREFIX}.deployment={self.recipe.cluster.name}"

    def compose_argv(self, directory: str, *args: str) -> list[str]:
        return ["docker", "compose", "-p", self.project, "-f", f"{directory}/{COMPOSE_FILE}", *args]

    async def start(self, transport: Transport, directory: str, launch: NodeLaunch) -> NodeProcess:
        if launch.compose is None:
            raise ClusterError(f"the plan for {launch.name} has no compose file", where=launch.name)
        node_secrets = self.recipe.secret_env(self.recipe.nodes[launch.rank])
        secrets = {k: v for k, v in node_secrets.items() if k in launch.secret_env}
        await ensure_private_dir(transport, directory, launch.name)
        await transport.write_file(f"{directory}/{SECRETS_ENV_FILE}", compose_env_file(secrets))
        await transport.write_file(f"{directory}/{COMPOSE_FILE}", compose_yaml(launch.compose), mode=0o644)
        # --pull never: a node must run the image preflight verified, never a registry's newer one.
        up = await transport.run(
            self.compose_argv(directory, "up", "-d", "--pull", "never"), timeout_s=TIMEOUTS.compose_up_s
        )
        if not up.ok:
            raise ClusterError(
                f"docker compose up failed on {launch.name}: {up.stderr.strip()[-800:]}",
                where=launch.name,
                fix=f"the compose file is {directory}/{COMPOSE_FILE} on that node; "
                "check the image and the daemon's error above",
            )
        # The engine's own service: the head's file may also run Prometheus and Grafana.
        ps = await transport.run(self.compose_argv(directory, "ps", "-a", "-q", SERVICE))
        container = ps.stdout.strip().splitlines()[0] if ps.ok and ps.stdout.strip() else ""
        if not container:
            raise ClusterError(f"no container after compose up on {launch.name}", where=launch.name)
        return NodeProcess(
            node=launch.name,
            rank=launch.rank,
            runtime="compose",
            container=container,
            log_path=f"{directory}/{COMPOSE_FILE}",
        )

    async def alive(self, transport: Transport, process: NodeProcess) -> bool:
        result = await transport.run(["docker", "inspect", "-f", "{{.State.Running}}", process.container or ""])
        return result.ok and result.stdout.strip() == "true"

    async def leftovers(self, transport: Transport) -> list[str]:
        found = await transport.run(["docker", "ps", "-a", "-q", "--filter", f"label={self.label}"])
        if not found.ok:
            return [f"cannot list containers: {found.stderr.strip()[:200]}"]
        return [f"container {c}" for c in found.stdout.split()]

    async def stop(self, transport: Transport, process: NodeProcess | None, *, grace_s: float) -> list[str]:
        """compose down under the project name, then remove anything left with our label."""
        directory = process.log_path.rsplit("/", 1)[0] if process is not None else None
        if directory is not None:
            await transport.run(
                self.compose_argv(directory, "down", "--timeout", str(int(grace_s)), "--remove-orphans"),
                timeout_s=grace_s + 2 * TIMEOUTS.stop_margin_s,
            )
        left = await self.leftovers(transport)
        ids = [item.split()[-1] for item in left if item.startswith("container ")]
        if ids:
            await transport.run(["docker", "rm", "-f", *ids], timeout_s=grace_s + 2 * TIMEOUTS.stop_margin_s)
            left = await self.leftovers(transport)
        return left

    def log_argv(self, process: NodeProcess, *, lines: int | None, follow: bool, since: str | None) -> list[str]:
        args = ["docker", "logs", "--tail", "all" if lines is None else str(lines)]
        args += ["--follow"] if follow else []
        args += ["--since", since] if since else []
        # docker logs writes the container's stderr to its own stderr; vLLM logs there.
        argv = ["sh", "-c", 'exec "$@" 2>&1', "flashspark-logs", *args, process.container or ""]
        return until_stdin_closes(argv) if follow else argv

    async def describe(self, transport: Transport, process: NodeProcess) -> dict[str, object]:
        fmt = "{{.State.Status}} {{.Image}} {{.Config.Image}}"
        result = await transport.run(["docker", "inspect", "-f", fmt, process.container or ""])
        parts = result.stdout.split() if result.ok else []
        return {
            "state": parts[0] if parts else "missing",
            "container": process.container,
            "image_id": parts[1] if len(parts) > 1 else None,
            "image": parts[2] if len(parts) > 2 else self.recipe.cluster.image,
        }


def runtime_for(recipe: Recipe) -> ProcessRuntime | ComposeRuntime:
    return ComposeRuntime(recipe) if recipe.cluster.runtime == "compose" else ProcessRuntime(recipe)


async def image_labels(transport: Transport, image: str) -> tuple[str | None, dict[str, str]]:
    """(image ID, labels) of `image` on a node; (None, {}) when absent. Labels via JSON: a Go
    template's `index` fails outright on an image that has no labels at all."""
    result = await transport.run(["docker", "image", "inspect", "-f", "{{.Id}} {{json .Config.Labels}}", image])
    if not result.ok or not result.stdout.strip():
        return None, {}
    found, _, labels = result.stdout.strip().partition(" ")
    try:
        parsed = json.loads(labels) or {}
    except ValueError:
        parsed = {}
    return found, {str(k): str(v) for k, v in parsed.items()}


async def image_id(transport: Transport, image: str) -> str | None:
    """The local image ID (sha256:...) of `image` on a node, or None when absent."""
    result = await transport.run(["docker", "image", "inspect", "-f", "{{.Id}}", image])
    return result.stdout.strip() if result.ok and result.stdout.strip() else None
