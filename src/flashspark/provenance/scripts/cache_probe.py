"""Is the model really in this Hugging Face cache, whole, at the pinned revision? (stdlib only)

Every shard named in `model.safetensors.index.json` must be present and
complete: a safetensors file declares its own length (8-byte header size +
JSON header + the largest tensor end offset), so a truncated download is
caught without the hub; with sha256 each file's content must also hash to its
blob name (the hub names LFS blobs by their sha256).

Layout read: <cache>/hub/models--ORG--NAME/{refs/REF, snapshots/COMMIT/..., blobs/...}
(`cache` may be HF_HOME or its `hub` folder).

This file needs nothing but Python's standard library because it also runs on
nodes that have no FlashSpark: it is sent over ssh to `python3 -` with
arguments CACHE MODEL REVISION SHA256(0|1) and prints its verdict as JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
from pathlib import Path
from typing import Any

INDEX = "model.safetensors.index.json"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def hub_dir(cache: Path) -> Path:
    return cache / "hub" if (cache / "hub").is_dir() else cache


def repo_dir(cache: Path, model: str) -> Path:
    return hub_dir(cache) / f"models--{model.replace('/', '--')}"


def resolve_commit(repo: Path, revision: str) -> str | None:
    """A commit hash as given, or the commit a ref (main, a tag) points at."""
    if _COMMIT.match(revision):
        return revision
    ref = repo / "refs" / revision
    return ref.read_text().strip() if ref.is_file() else None


def expected_safetensors_size(path: Path) -> int:
    """The length a complete safetensors file declares for itself."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) < 8:
            raise ValueError("shorter than the 8-byte header length")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > 100_000_000:
            raise ValueError(f"implausible header length {header_len}")
        header = handle.read(header_len)
        if len(header) < header_len:
            raise ValueError("header cut short")
    tensors = json.loads(header)
    ends = [int(t["data_offsets"][1]) for name, t in tensors.items() if name != "__metadata__"]
    return 8 + int(header_len) + max(ends, default=0)


def shard(
    name: str, status: str, size: int | None = None, expected: int | None = None, detail: str = ""
) -> dict[str, Any]:
    return {"name": name, "status": status, "size": size, "expected_size": expected, "detail": detail}


def check_shard(snapshot: Path, name: str, *, sha256: bool) -> dict[str, Any]:
    path = snapshot / name
    if not path.exists():
        return shard(name, "missing", detail="not in the snapshot")
    size = path.stat().st_size
    try:
        expected = expected_safetensors_size(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return shard(name, "unreadable", size, detail=str(exc))
    if size < expected:
        return shard(name, "truncated", size, expected, f"{size:,} of {expected:,} bytes")
    if size > expected:
        return shard(name, "too_long", size, expected)
    if sha256:
        blob = path.resolve().name
        if _SHA256.match(blob):
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != blob:
                return shard(
                    name, "hash_mismatch", size, detail=f"sha256 {digest.hexdigest()[:12]}… != blob {blob[:12]}…"
                )
    return shard(name, "ok", size, expected)


def probe(cache: Path, model: str, revision: str = "main", sha256: bool = False) -> dict[str, Any]:
    """The cache's verdict as plain data: model, revision, commit, snapshot, problems, shards."""
    repo = repo_dir(cache, model)

    def fail(problem: str, commit: str | None = None, snapshot: str | None = None) -> dict[str, Any]:
        return {
            "ok": False,
            "model": model,
            "revision": revision,
            "commit": commit,
            "snapshot": snapshot,
            "problems": [problem],
            "shards": [],
        }

    if not repo.is_dir():
        return fail(f"{model} is not in the cache at {hub_dir(cache)} (no {repo.name})")
    commit = resolve_commit(repo, revision)
    snapshots = repo / "snapshots"
    have = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
    if commit is None:
        return fail(
            f"revision {revision!r} is not known to this cache (refs: "
            f"{sorted(p.name for p in (repo / 'refs').glob('*')) or 'none'})"
        )
    snapshot = snapshots / commit
    if not snapshot.is_dir():
        return fail(
            f"no snapshot for revision {revision} ({commit[:12]}); the cache has {[h[:12] for h in have] or 'none'}",
            commit,
        )
    index = snapshot / INDEX
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as exc:
            return fail(f"{INDEX} is unreadable: {exc}", commit, str(snapshot))
    else:
        names = sorted(p.name for p in snapshot.glob("*.safetensors"))
        if not names:
            return fail(f"no {INDEX} and no .safetensors files in the snapshot", commit, str(snapshot))
    shards = [check_shard(snapshot, name, sha256=sha256) for name in names]
    problems = [
        f"{s['name']}: {s['status']}" + (f" ({s['detail']})" if s["detail"] else "")
        for s in shards
        if s["status"] != "ok"
    ]
    return {
        "ok": not problems,
        "model": model,
        "revision": revision,
        "commit": commit,
        "snapshot": str(snapshot),
        "problems": problems,
        "shards": shards,
    }


if __name__ == "__main__":
    cache_arg, model_arg, revision_arg, sha_arg = sys.argv[1:5]
    print(json.dumps(probe(Path(cache_arg), model_arg, revision_arg, sha_arg == "1")))  # noqa: T201 - its output
