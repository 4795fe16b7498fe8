"""Download one model snapshot at a pinned revision into a Hugging Face cache, after a disk check.

Runs on a node with `python - MODEL REVISION CACHE WORKERS` and an interpreter that
has huggingface_hub (the runtime image's or the vLLM environment's); prints one JSON
object. The token comes from HF_TOKEN in the environment, never from arguments.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main(model: str, revision: str, cache: str, workers: int) -> dict[str, object]:
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:
        return {"ok": False, "error": "huggingface_hub is not installed for this interpreter"}
    hub = Path(cache) / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    info = HfApi().model_info(model, revision=revision, files_metadata=True)
    needed = sum(int(s.size or 0) for s in info.siblings or [])
    free = shutil.disk_usage(hub).free
    if needed > free:
        return {"ok": False, "error": f"needs {needed:,} bytes, {free:,} free in {hub}", "needed": needed}
    # Downloaded by commit (a branch that moves mid-download cannot mix two snapshots), so the hub
    # writes no ref for the name asked for: record it as huggingface_hub does, or a check by that
    # name (`main`) would not find the snapshot just downloaded.
    path = snapshot_download(model, revision=info.sha, cache_dir=str(hub), max_workers=workers)
    if revision != info.sha:
        ref = hub / f"models--{model.replace('/', '--')}" / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(str(info.sha))
    return {"ok": True, "snapshot": path, "commit": info.sha, "bytes": needed}


if __name__ == "__main__":
    model_arg, revision_arg, cache_arg, workers_arg = sys.argv[1:5]
    try:
        outcome = main(model_arg, revision_arg, cache_arg, int(workers_arg))
    except Exception as error:
        outcome = {"ok": False, "error": f"{type(error).__name__}: {error}"[:1000]}
    print(json.dumps(outcome))  # noqa: T201 - its output
