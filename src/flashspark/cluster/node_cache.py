"""The model-cache probe run on a node: the one way preflight, `model verify --all-nodes` and
`model prepare` look into a node's HF cache (the stdlib-only probe, sent to `python3 -`)."""

from __future__ import annotations

import json

from flashspark.cluster.timeouts import TIMEOUTS
from flashspark.cluster.transport import Transport
from flashspark.provenance.model_cache import ModelCacheReport, probe_source

# The interpreter every node is expected to have for FlashSpark's stdlib-only probes.
NODE_PYTHON = "python3"


async def probe_cache(
    transport: Transport, cache: str, model: str, revision: str, *, sha256: bool = False, python: str = NODE_PYTHON
) -> tuple[ModelCacheReport | None, str]:
    """(the node's report, "") or (None, why the probe did not run there)."""
    argv = [python, "-", cache, model, revision, "1" if sha256 else "0"]
    result = await transport.run(
        argv, stdin=probe_source(), timeout_s=TIMEOUTS.cache_hash_s if sha256 else TIMEOUTS.cache_probe_s
    )
    try:
        return ModelCacheReport.model_validate(json.loads(result.stdout)), ""
    except ValueError:
        return None, f"the probe did not run with {python}: {result.stderr.strip()[-300:]}"
