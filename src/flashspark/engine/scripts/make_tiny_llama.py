"""Build a tiny random-weight Llama that vLLM serves: real engine, real garbage.

Runs inside the engine's virtual environment. It borrows the tokenizer of a
model FlashSpark already converted (SmolLM2), so prompts tokenize normally,
and draws random weights with a fixed seed, so the garbage is reproducible.
4 attention heads and 2 KV heads keep it divisible for tensor parallel 2.
Usage: python make_tiny_llama.py TOKENIZER_DIR OUT_DIR
"""

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def main() -> None:
    tokenizer_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "flashspark-source.json").write_text(
        json.dumps({"random_weights": True, "seed": 1234, "tokenizer_from": str(tokenizer_dir)}, indent=2)
    )
    tmp.rename(out)
    print(out)


if __name__ == "__main__":
    main()
