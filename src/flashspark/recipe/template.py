"""Commented starting points for a cluster file (`flashspark config init`).

The placeholders are the reference recipe's own (`head-roce-ip`, `rocepXsYfZ`):
`config check` refuses them until they are replaced.
"""

from __future__ import annotations

ENV_TEMPLATE = """\
# FlashSpark cluster file (.env.dspark style). Only this cluster's facts live
# here; the serving profile (context, sequences, DSpark, env groups) comes from
# the profile named below. Any profile value can still be overridden here or
# with `--set KEY=VALUE`. Precedence: --set > this file > profile > defaults.
#
# Check it:   flashspark config check --env .env.dspark
# Render it:  flashspark config render --env .env.dspark --out rendered/

PROFILE=agent-1m

# --- Head node (rank 0): where you run flashspark ------------------------------
# This node's own fabric (RoCE) IP: vLLM binds its rendezvous sockets to it.
VLLM_HOST_IP=head-roce-ip
# RDMA device and interface carrying that IP (see `ibdev2netdev`).
NCCL_IB_HCA=rocepXsYfZ
NCCL_SOCKET_IFNAME=enpXsYfZnpN
# RoCEv2 GID index (`show_gids`), or auto to resolve it from sysfs per node.
NCCL_IB_GID_INDEX=auto
HF_CACHE=${HOME}/.cache/huggingface

# --- Worker node (rank 1, started first, --headless) ---------------------------
# ssh target; FlashSpark uses OpenSSH with BatchMode, so keys must work.
WORKER_HOST=worker-host-or-roce-ip
WORKER_VLLM_HOST_IP=worker-roce-ip
# Empty means "same as the head" for these:
WORKER_HF_CACHE=
WORKER_SCRIPT_DIR=
WORKER_NCCL_IB_HCA=
WORKER_NCCL_SOCKET_IFNAME=
# More workers: WORKER2_HOST, WORKER2_VLLM_HOST_IP, ... (and raise TENSOR_PARALLEL_SIZE).

# --- Rendezvous ---------------------------------------------------------------
# torch.distributed master: the head's fabric IP.
MASTER_ADDR=head-roce-ip
MASTER_PORT=25000

# --- Model and image ----------------------------------------------------------
DSPARK_MODEL=deepseek-ai/DeepSeek-V4-Flash-DSpark
MODEL_REVISION=
SERVED_MODEL_NAME=deepseek-v4-flash-dspark
DSPARK_VLLM_IMAGE=vllm-dspark-runtime:dspark-nvfp4-stage-c

# --- API ----------------------------------------------------------------------
# Loopback by default. To serve agents on other machines set VLLM_HOST=0.0.0.0
# AND EXPOSE_API=1 (a deliberate choice), and preferably VLLM_API_KEY.
VLLM_HOST=127.0.0.1
VLLM_PORT=8888
EXPOSE_API=0
# Secrets never reach rendered files or logs; they go to an owner-only env file.
VLLM_API_KEY=
HF_TOKEN=

# --- Profile overrides (leave commented to keep the profile's values) -----------
# MAX_MODEL_LEN=1048576
# MAX_NUM_SEQS=6
# MAX_NUM_BATCHED_TOKENS=8192
# GPU_MEMORY_UTILIZATION=0.80
# MTP_NUM_TOKENS=5
# VLLM_USE_B12X_WO_PROJECTION=1
"""

TOML_TEMPLATE = """\
# FlashSpark cluster file (TOML). Tables mirror the recipe: see
# `flashspark config check --json` for every resolved key and where it came from.
# Precedence: --set > this file > profile > defaults.
profile = "agent-1m"

[cluster]
master_addr = "head-roce-ip"      # the head's fabric IP
master_port = 25000
image = "vllm-dspark-runtime:dspark-nvfp4-stage-c"
runtime = "compose"               # or "process" for bare-metal vLLM

[model]
id = "deepseek-ai/DeepSeek-V4-Flash-DSpark"
# revision = "<pinned commit>"
served_name = "deepseek-v4-flash-dspark"

[api]
host = "127.0.0.1"                # non-loopback needs expose = true
port = 8888

# The first node is the head (rank 0); every further node is a worker.
[[nodes]]
name = "spark1"
ssh = "local"
vllm_host_ip = "head-roce-ip"
nccl_ib_hca = "rocepXsYfZ"
socket_ifname = "enpXsYfZnpN"
gid_index = "auto"
hf_cache = "/home/user/.cache/huggingface"

[[nodes]]
name = "spark2"
ssh = "user@worker-host-or-roce-ip"
vllm_host_ip = "worker-roce-ip"
nccl_ib_hca = "rocepXsYfZ"
socket_ifname = "enpXsYfZnpN"
gid_index = "auto"
hf_cache = "/home/user/.cache/huggingface"

# [engine]
# max_num_seqs = 6
"""


def config_template(fmt: str) -> str:
    """The commented template for `env` or `toml`."""
    return TOML_TEMPLATE if fmt == "toml" else ENV_TEMPLATE
