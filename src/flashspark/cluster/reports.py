"""What the lifecycle hands back and writes down: typed, versioned, the same for one node and for N.

Every model here crosses the package boundary to the CLI (which renders it) or
lands in a run directory (boot.json, failure.json, capture.json). Values a
server or a node reports about itself (a /v1/models entry) are kept as they
came, under a typed envelope.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flashspark.bootlog import BootEvidence
from flashspark.cluster.fabric import FabricReport
from flashspark.cluster.hostfacts import HostFacts
from flashspark.cluster.state import NodeProcess
from flashspark.pins import Pins
from flashspark.provenance.model_cache import ModelCacheReport

BOOT_SCHEMA_VERSION = 3
FAILURE_SCHEMA_VERSION = 1
REPORT_SCHEMA_VERSION = 1
CAPTURE_SCHEMA_VERSION = 1


class Report(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServedModel(BaseModel):
    """One /v1/models entry: the id and context vLLM serves (anything else it says is kept)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    max_model_len: int | None = None


class BootRecord(Report):
    """boot.json: the evidence of one `up`, whatever the number of nodes."""

    schema_version: int = BOOT_SCHEMA_VERSION
    deployment: str
    profile: str
    runtime: str
    nodes: list[str]
    boot_s: float
    evidence: BootEvidence
    served_model: ServedModel
    pins: Pins
    base_url: str
    log: str = Field(description="The head's engine log (a path on the head node).")
    logs: dict[str, str] = Field(description="Every node's engine log, node -> path on that node.")
    host_facts: list[HostFacts] = Field(default_factory=list, description="Each node's host facts at preflight.")
    fabric: FabricReport | None = Field(default=None, description="The all-reduce before the boot (several nodes).")


class FailureRecord(Report):
    """failure.json: why an `up` failed and what was left after stopping every node."""

    schema_version: int = FAILURE_SCHEMA_VERSION
    message: str
    phase: str | None = None
    process_groups: dict[str, int] = Field(default_factory=dict)
    containers: dict[str, str] = Field(default_factory=dict)
    left_after_stop: dict[str, list[str] | str] = Field(default_factory=dict)


class Started(Report):
    """What every `up` hands back: where it serves, and where its evidence is."""

    schema_version: int = REPORT_SCHEMA_VERSION
    ok: bool = True
    deployment: str
    base_url: str
    run_dir: str
    boot_json: str
    boot_s: float


class UpResult(Started):
    nodes: list[NodeProcess]
    boot: BootEvidence


class DownResult(Report):
    schema_version: int = REPORT_SCHEMA_VERSION
    deployment: str
    was_running: bool = True
    stopped: list[str] = Field(default_factory=list)
    leftovers: dict[str, list[str]] = Field(default_factory=dict, description="node -> what is still there")
    unreachable: dict[str, str] = Field(default_factory=dict, description="node -> why it could not be reached")
    port_free: bool = True

    @property
    def clean(self) -> bool:
        return not self.leftovers and not self.unreachable and self.port_free


class ApiProbe(Report):
    """What the server says now: /health status, served models, version (and, for captures, /metrics)."""

    base_url: str
    health: int | None = None
    models: list[ServedModel] = Field(default_factory=list)
    version: str | None = None
    error: str | None = None
    metrics: str | None = Field(default=None, exclude=True)


class PortState(Report):
    port: int
    listening: bool


class NodeStatus(Report):
    node: str
    rank: int
    role: Literal["head", "worker"]
    reachable: bool = False
    state: str = "not started"
    error: str | None = None
    pid: int | None = None
    container: str | None = None
    processes: list[list[str]] = Field(default_factory=list)
    vllm_bin: str | None = None
    image_id: str | None = None
    image: str | None = None
    leftovers: list[str] = Field(default_factory=list)
    ports: dict[str, PortState] = Field(default_factory=dict)


class StatusReport(Report):
    schema_version: int = REPORT_SCHEMA_VERSION
    deployment: str
    profile: str
    runtime: str
    base_url: str
    running: bool
    run_dir: str | None = None
    nodes: list[NodeStatus]
    api: ApiProbe
    same_image_everywhere: bool | None = None


class CaptureIndex(Report):
    """capture.json: what a capture holds (file -> sha256 of its redacted text) and the pins."""

    schema_version: int = CAPTURE_SCHEMA_VERSION
    directory: str
    deployment: str
    profile: str
    runtime: str
    taken_at: str
    pins: Pins
    files: dict[str, str]


class CaptureDiff(Report):
    schema_version: int = REPORT_SCHEMA_VERSION
    a: str
    b: str
    only_in_a: list[str]
    only_in_b: list[str]
    changed: list[str]
    diffs: dict[str, list[str]]
    counter_deltas: dict[str, float] | None = None


# --- provenance: the image and the model cache, per node -------------------------------------


class NodeBuild(Report):
    action: str = Field(description="built | copied | same image, not copied")
    image_id: str | None


class ImageBuildReport(Report):
    schema_version: int = REPORT_SCHEMA_VERSION
    tag: str
    manifest_sha256: str
    manifest: dict[str, Any] = Field(description="The manifest baked into the image, as written to its file.")
    nodes: dict[str, NodeBuild]
    same_image_everywhere: bool
    run_dir: str


class NodeImageCheck(Report):
    node: str
    image_id: str | None = None
    manifest_sha256: str | None = None
    python: str | None = Field(default=None, description="process runtime: the interpreter that found vLLM.")
    vllm_root: str | None = None
    problems: list[str] = Field(default_factory=list)


class ImageVerifyReport(Report):
    schema_version: int = REPORT_SCHEMA_VERSION
    tag: str | None = None
    manifest_sha256: str | None = None
    nodes: list[NodeImageCheck]
    same_image_everywhere: bool | None = None
    problems: list[str] = Field(default_factory=list)
    ok: bool


class NodeModelCheck(Report):
    node: str
    ok: bool
    problems: list[str]
    report: ModelCacheReport | None = None


class ModelVerifyReport(Report):
    schema_version: int = REPORT_SCHEMA_VERSION
    model: str
    revision: str
    nodes: list[NodeModelCheck]
    same_commit_everywhere: bool
    ok: bool


class NodeModelPrepared(Report):
    node: str
    action: str
    ok: bool
    commit: str | None
    problems: list[str]


class ModelPrepareReport(Report):
    schema_version: int = REPORT_SCHEMA_VERSION
    model: str
    revision: str
    nodes: list[NodeModelPrepared]
    ok: bool
