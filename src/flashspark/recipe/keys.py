"""The flat key names users write (the recipe's `.env.dspark` names) and where each lands.

The reference recipe configures everything through one dotenv file whose
variable names its users know by heart. FlashSpark keeps those names as the
flat key space of `.env` files and `--set KEY=VALUE`, and maps each onto a
dotted path of the typed `Recipe`. Dotted paths (`engine.max_num_seqs`) work
in `--set` too.
"""

from __future__ import annotations

import re

#: The largest list position a setting may name (WORKER63_HOST, nodes.63.ssh, ...): more nodes than any
#: DGX Spark cluster; a larger index is a typo, and would make a list that long.
MAX_INDEX = 63

#: Flat name -> dotted recipe path, for keys that are not per node.
SCALAR_KEYS: dict[str, str] = {
    "PROFILE": "profile.name",
    "DEPLOYMENT_NAME": "cluster.name",
    "RUNTIME": "cluster.runtime",
    "FABRIC": "cluster.fabric",
    "DSPARK_VLLM_IMAGE": "cluster.image",
    "VLLM_BIN": "cluster.vllm_bin",
    "MASTER_ADDR": "cluster.master_addr",
    "MASTER_PORT": "cluster.master_port",
    "RESTART_POLICY": "cluster.restart_policy",
    "SHM_SIZE": "cluster.shm_size",
    "HF_TOKEN": "cluster.hf_token",
    "DSPARK_MODEL": "model.id",
    "MODEL_REVISION": "model.revision",
    "DSPARK_MODEL_REVISION": "model.revision",
    "SERVED_MODEL_NAME": "model.served_name",
    "VLLM_HOST": "api.host",
    "VLLM_PORT": "api.port",
    "EXPOSE_API": "api.expose",
    "VLLM_API_KEY": "api.api_key",
    "MAX_MODEL_LEN": "engine.max_model_len",
    "MAX_NUM_SEQS": "engine.max_num_seqs",
    "MAX_NUM_BATCHED_TOKENS": "engine.max_num_batched_tokens",
    "GPU_MEMORY_UTILIZATION": "engine.gpu_memory_utilization",
    "BLOCK_SIZE": "engine.block_size",
    "KV_CACHE_DTYPE": "engine.kv_cache_dtype",
    "MAX_CUDAGRAPH_CAPTURE_SIZE": "engine.max_cudagraph_capture_size",
    "ENFORCE_EAGER": "engine.enforce_eager",
    "ALLOW_LONG_MAX_MODEL_LEN": "engine.allow_long_max_model_len",
    "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "engine.allow_long_max_model_len",
    "MTP_NUM_TOKENS": "speculative.num_speculative_tokens",
    "SPECULATIVE_METHOD": "speculative.method",
    "DRAFT_SAMPLE_METHOD": "speculative.draft_sample_method",
    "TENSOR_PARALLEL_SIZE": "parallel.tensor_parallel_size",
    "PIPELINE_PARALLEL_SIZE": "parallel.pipeline_parallel_size",
    "GENERATION_TEMPERATURE": "generation.temperature",
    "GENERATION_TOP_P": "generation.top_p",
    "GENERATION_TOP_K": "generation.top_k",
    "GENERATION_REPETITION_PENALTY": "generation.repetition_penalty",
    "MONITORING": "watch.monitoring",
    "FABRIC_CHECK": "lifecycle.fabric_check",
    "EXPECT_MOE_BACKEND": "expect.moe_backend",
    "EXPECT_ATTENTION_BACKEND": "expect.attention_backend",
    "CANARY_INTERVAL_S": "watch.interval_s",
    "ACCEPTANCE_FLOOR": "watch.acceptance_floor",
}

#: Per-node fields. The bare name sets the head (rank 0); the shared ones are
#: inherited by every worker unless a WORKER_/WORKERn_ variant says otherwise.
NODE_FIELDS: dict[str, str] = {
    "HOST": "ssh",
    "NAME": "name",
    "SSH_PORT": "ssh_port",
    "SSH_IDENTITY": "ssh_identity",
    "VLLM_HOST_IP": "vllm_host_ip",
    "NCCL_IB_HCA": "nccl_ib_hca",
    "NCCL_SOCKET_IFNAME": "socket_ifname",
    "NCCL_IB_GID_INDEX": "gid_index",
    "HF_CACHE": "hf_cache",
    "SCRIPT_DIR": "checkout_dir",
    "DIR": "checkout_dir",
}
SHARED_NODE_FIELDS = ("NCCL_IB_HCA", "NCCL_SOCKET_IFNAME", "NCCL_IB_GID_INDEX", "HF_CACHE")

#: Head keys: the bare names, plus HEAD_HOST/HEAD_NAME for the head's own ssh target.
HEAD_KEYS: dict[str, str] = {
    "HEAD_HOST": "ssh",
    "HEAD_NAME": "name",
    "VLLM_HOST_IP": "vllm_host_ip",
    "NCCL_IB_HCA": "nccl_ib_hca",
    "NCCL_SOCKET_IFNAME": "socket_ifname",
    "NCCL_IB_GID_INDEX": "gid_index",
    "HF_CACHE": "hf_cache",
}

#: WORKER_<FIELD> is worker 1; WORKER<n>_<FIELD> is worker n (n >= 2).
WORKER_KEY = re.compile(r"^WORKER(?P<index>[2-9]|[1-9]\d+)?_(?P<field>[A-Z_]+)$")

#: Names the reference scripts read that FlashSpark derives or handles itself.
RECOGNISED_UNUSED: dict[str, str] = {
    "NODE_RANK": "FlashSpark derives each node's rank from the node order.",
    "HEADLESS": "FlashSpark renders --headless for every rank >= 1.",
    "WAIT_ATTEMPTS": "readiness waits have per-phase timeouts instead.",
    "WAIT_SECONDS": "readiness waits have per-phase timeouts instead.",
    "API_URL": "the API URL is derived from VLLM_HOST and VLLM_PORT.",
    "CHAT_URL": "the API URL is derived from VLLM_HOST and VLLM_PORT.",
    "PROJECT_NAME": "the compose project is derived from DEPLOYMENT_NAME.",
    "LEGACY_PROJECT_NAME": "the compose project is derived from DEPLOYMENT_NAME.",
    "TAIL": "use `flashspark logs --tail N`.",
    "PORT": "use VLLM_PORT.",
    "CONCURRENCY": "use `flashspark smoke --concurrency N`.",
    "MAX_TOKENS": "gates and benches take --max-tokens.",
    "ENV_FILE": "pass the file with --env.",
    "COMPOSE_FILE": "FlashSpark renders the compose file itself.",
    "COMPOSE_DISABLE_ENV_FILE": "FlashSpark passes env files explicitly.",
    "SKIP_OVERLAY_CHECK": "image provenance is checked by `flashspark image verify`.",
    "DSPARK_BASE_IMAGE": "image builds are configured separately.",
    "WORKER_BUILD": "image builds are configured separately.",
    "WORKER_CHECKOUT": "image builds are configured separately.",
    "PREPARE_WORKER": "model preparation is configured separately.",
    "HF_DOWNLOAD_WORKERS": "model preparation is configured separately.",
    "THIS_NODE_HF_CACHE": "set HF_CACHE / WORKER_HF_CACHE per node.",
}

#: Prefixes of environment variables that pass straight through to the engine.
PASSTHROUGH_PREFIXES = (
    "VLLM_",
    "NCCL_",
    "B12X_",
    "DSPARK_",
    "HF_",
    "TRANSFORMERS_",
    "TORCH_",
    "PYTORCH_",
    "FLASHINFER_",
    "TILELANG_",
    "DG_JIT_",
    "GLOO_",
    "TP_SOCKET_",
    "CUDA_",
    "OMP_",
)

#: Values the recipe's template ships that must be replaced before use.
PLACEHOLDER_PATTERNS = (
    re.compile(r"X[sS]Y[fF]Z"),  # rocepXsYfZ, enpXsYfZnpN
    re.compile(r"(^|[-_])roce-ip$"),  # head-roce-ip, worker-roce-ip
    re.compile(r"^worker-host-or-roce-ip$"),
    re.compile(r"<[^<>]+>"),  # <fill me in>
    re.compile(r"CHANGE[-_]?ME", re.IGNORECASE),
)


def is_placeholder(value: str) -> bool:
    return any(p.search(value) for p in PLACEHOLDER_PATTERNS)


def all_flat_keys() -> list[str]:
    """Every flat name FlashSpark maps, for 'did you mean' suggestions."""
    names = set(SCALAR_KEYS) | set(HEAD_KEYS) | set(RECOGNISED_UNUSED)
    names |= {f"WORKER_{field}" for field in NODE_FIELDS}
    return sorted(names)
