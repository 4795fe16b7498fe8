"""Commented starting points for a cluster file (`flashspark config init`).

Only what the user must fill in is written as a live value; the placeholders
are the reference recipe's own (`head-roce-ip`, `rocepXsYfZ`) and `config
check` refuses them until they are replaced. Every default is shown as a
comment, filled in from the recipe, never written as a value: a value in the
user's file would count as the user's choice and hide a later change of default.
"""

from __future__ import annotations

from flashspark.recipe.model import Recipe

ENV_TEMPLATE = """\
# FlashSpark cluster file (.env.dspark style). Only this cluster's facts live
# here; the serving profile (context, sequences, DSpark, env groups) comes from
# the profile named below. Any profile value can still be overridden here or
# with `--set KEY=VALUE`. Precedence: --set > this file > profile > defaults.
#
# Check it:   flashspark config check --env .env.dspark
# Render it:  flashspark config render --env .env.dspark --out rendered/

# PROFILE={profile}          (the default profile; `flashspark profiles` lists the others)

# --- Head node (rank 0): where you run flashspark ------------------------------
# This node's own fabric (RoCE) IP: vLLM binds its rendezvous sockets to it.
VLLM_HOST_IP=head-roce-ip
# RDMA device and interface carrying that IP (see `ibdev2netdev`).
NCCL_IB_HCA=rocepXsYfZ
NCCL_SOCKET_IFNAME=enpXsYfZnpN
# RoCEv2 GID index (`show_gids`), or auto to resolve it from sysfs per node.
NCCL_IB_GID_INDEX=auto
HF_CACHE=${{HOME}}/.cache/huggingface

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
# MASTER_PORT={master_port}

# --- Model and image (the defaults, commented: uncomment a line to change it) ----
# DSPARK_MODEL={model_id}
# MODEL_REVISION=<the commit to pin>
# SERVED_MODEL_NAME={served_name}
# DSPARK_VLLM_IMAGE={image}
# RUNTIME={runtime}

# --- API ----------------------------------------------------------------------
# Loopback by default. To serve agents on other machines set VLLM_HOST=0.0.0.0
# AND EXPOSE_API=1 (a deliberate choice), and preferably VLLM_API_KEY.
# VLLM_HOST={api_host}
# VLLM_PORT={api_port}
# EXPOSE_API=0
# Secrets never reach rendered files or logs; they go to an owner-only env file.
# VLLM_API_KEY=
# HF_TOKEN=

# --- Profile values (leave commented to keep the profile's) ---------------------
# MAX_MODEL_LEN={max_model_len}
# MAX_NUM_SEQS={max_num_seqs}
# MAX_NUM_BATCHED_TOKENS={max_num_batched_tokens}
# GPU_MEMORY_UTILIZATION={gpu_memory_utilization}
# MTP_NUM_TOKENS={num_speculative_tokens}
"""

TOML_TEMPLATE = """\
# FlashSpark cluster file (TOML). Tables mirror the recipe: see
# `flashspark config check --json` for every resolved key and where it came from.
# Precedence: --set > this file > profile > defaults.
# Defaults are shown commented: uncomment a line to change it.
# profile = "{profile}"

[cluster]
master_addr = "head-roce-ip"      # the head's fabric IP
# master_port = {master_port}
# image = "{image}"
# runtime = "{runtime}"              # or "process" for bare-metal vLLM

[model]
# id = "{model_id}"
# revision = "<the commit to pin>"
# served_name = "{served_name}"

[api]
# host = "{api_host}"                # non-loopback needs expose = true
# port = {api_port}

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
# max_num_seqs = {max_num_seqs}
"""


def config_template(fmt: str, defaults: Recipe) -> str:
    """The commented template for `env` or `toml`, its comments showing `defaults` (the default profile)."""
    values = {
        "profile": defaults.profile.name,
        "master_port": defaults.cluster.master_port,
        "model_id": defaults.model.id,
        "served_name": defaults.model.served_name,
        "image": defaults.cluster.image,
        "runtime": defaults.cluster.runtime,
        "api_host": defaults.api.host,
        "api_port": defaults.api.port,
        "max_model_len": defaults.engine.max_model_len,
        "max_num_seqs": defaults.engine.max_num_seqs,
        "max_num_batched_tokens": defaults.engine.max_num_batched_tokens,
        "gpu_memory_utilization": defaults.engine.gpu_memory_utilization,
        "num_speculative_tokens": defaults.speculative.num_speculative_tokens,
    }
    return (TOML_TEMPLATE if fmt == "toml" else ENV_TEMPLATE).format(**values)
