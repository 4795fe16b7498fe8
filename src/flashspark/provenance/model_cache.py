"""Is the model really in a node's Hugging Face cache, whole, at the pinned revision?

The recipe checked only that shard names existed. The checking itself lives in
`cache_probe` (standard library only, so the same code runs on remote nodes);
this module gives its verdict a typed shape.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from flashspark.provenance.scripts import cache_probe, hub_download

INDEX = cache_probe.INDEX


class ShardCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    status: str  # ok | missing | truncated | too_long | unreadable | hash_mismatch
    size: int | None = None
    expected_size: int | None = None
    detail: str = ""


class ModelCacheReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    ok: bool
    model: str
    revision: str
    commit: str | None
    snapshot: str | None
    problems: list[str] = Field(default_factory=list)
    shards: list[ShardCheck] = Field(default_factory=list)

    @property
    def bad_shards(self) -> list[ShardCheck]:
        return [s for s in self.shards if s.status != "ok"]


def verify_model_cache(cache: Path, model: str, *, revision: str = "main", sha256: bool = False) -> ModelCacheReport:
    """Check this machine's cache; never raises for what it finds, only reports it."""
    return ModelCacheReport.model_validate(cache_probe.probe(cache, model, revision, sha256))


def probe_source() -> bytes:
    """The probe's own source, to run on a node as `python3 - CACHE MODEL REVISION SHA256`."""
    return Path(cache_probe.__file__).read_bytes()


def download_program(hf_token: str | None) -> bytes:
    """The download script as a program for `python - MODEL REVISION CACHE WORKERS` on a node.

    A token travels inside the program, on the ssh connection's stdin: never in an argument (`ps`
    shows those) or a file. The script itself is compiled from a string, so that the line setting
    the token can come first while the script keeps its own `from __future__` imports.
    """
    source = Path(hub_download.__file__).read_text(encoding="utf-8")
    lines = ["import os"]
    if hf_token:
        lines.append(f"os.environ['HF_TOKEN'] = {json.dumps(hf_token)}")
    lines.append(f"exec(compile({json.dumps(source)}, 'hub_download.py', 'exec'), {{'__name__': '__main__'}})")
    return ("\n".join(lines) + "\n").encode()
