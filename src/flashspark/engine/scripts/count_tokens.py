"""Count chat prompt tokens with a model's own tokenizer files, as vLLM's POST /tokenize would.

Runs inside the engine's virtual environment (it needs transformers); FlashSpark calls it as a
file, so it imports nothing from FlashSpark. Usage: python count_tokens.py TOKENIZER_DIR
Reads one JSON object a line on stdin, {"messages": [...]}, and writes one a line on stdout,
{"count": N} or {"error": "..."}: the chat template applied with the generation prompt, as a chat
request is counted.
"""

import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            messages = json.loads(line)["messages"]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
                ids = ids["input_ids"]
            answer = {"count": len(ids)}
        except Exception as exc:  # one bad request must not end the counter
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
