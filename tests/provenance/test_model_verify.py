"""`model verify` on real Hugging Face cache layouts built here (blobs, snapshots, refs, safetensors)."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from flashspark.cli.main import main

MODEL = "deepseek-ai/DeepSeek-V4-Flash-DSpark"
COMMIT = "9e165c30" + "0" * 32


def safetensors_bytes(tensor_bytes: int, name: str = "w") -> bytes:
    header = json.dumps({name: {"dtype": "U8", "shape": [tensor_bytes], "data_offsets": [0, tensor_bytes]}}).encode()
    return (
        struct.pack("<Q", len(header)) + header + bytes(range(256)) * (tensor_bytes // 256) + bytes(tensor_bytes % 256)
    )


def build_cache(root: Path, shards: int = 3) -> Path:
    """The layout huggingface_hub writes: blobs named by sha256, snapshot files linking to them."""
    repo = root / "hub" / f"models--{MODEL.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {}
    for i, name in enumerate(names):
        data = safetensors_bytes(4096 + i * 512, name=f"layer{i}")
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
        weight_map[f"layer{i}"] = name
    (snapshot / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return root


def verify(cache: Path, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(
        main, ["model", "verify", "--hf-cache", str(cache), "--model", MODEL, "--json", *extra], catch_exceptions=False
    )
    return result.exit_code, json.loads(result.stdout)


def shard_blob(cache: Path, index: int) -> Path:
    snapshot = cache / "hub" / f"models--{MODEL.replace('/', '--')}" / "snapshots" / COMMIT
    return sorted(snapshot.glob("*.safetensors"))[index].resolve()


def test_a_complete_cache_passes(tmp_path: Path) -> None:
    code, report = verify(build_cache(tmp_path), "--sha256")
    assert code == 0 and report["ok"] and report["commit"] == COMMIT
    assert [s["status"] for s in report["shards"]] == ["ok", "ok", "ok"]


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    cache = build_cache(tmp_path)
    snapshot = shard_blob(cache, 1).parents[1] / "snapshots" / COMMIT
    (snapshot / "model-00002-of-00003.safetensors").unlink()
    code, report = verify(cache)
    assert code == 4
    assert report["problems"] == ["model-00002-of-00003.safetensors: missing (not in the snapshot)"]


def test_a_truncated_shard_is_named_with_its_sizes(tmp_path: Path) -> None:
    cache = build_cache(tmp_path)
    blob = shard_blob(cache, 2)
    data = blob.read_bytes()
    blob.write_bytes(data[:-100])
    code, report = verify(cache)
    bad = [s for s in report["shards"] if s["status"] != "ok"]
    assert code == 4 and [(s["name"], s["status"]) for s in bad] == [("model-00003-of-00003.safetensors", "truncated")]
    assert bad[0]["expected_size"] - bad[0]["size"] == 100


def test_a_wrong_revision_is_reported(tmp_path: Path) -> None:
    code, report = verify(build_cache(tmp_path), "--revision", "a" * 40)
    assert code == 4 and "no snapshot for revision" in report["problems"][0]
    code, report = verify(tmp_path, "--revision", "v2")
    assert code == 4 and "not known to this cache" in report["problems"][0]


def test_sha256_catches_same_size_corruption(tmp_path: Path) -> None:
    cache = build_cache(tmp_path)
    blob = shard_blob(cache, 0)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert verify(cache)[0] == 0  # sizes still agree
    code, report = verify(cache, "--sha256")
    assert code == 4 and report["shards"][0]["status"] == "hash_mismatch"


def test_a_model_not_in_the_cache(tmp_path: Path) -> None:
    code, report = verify(tmp_path)
    assert code == 4 and "is not in the cache" in report["problems"][0]


@pytest.mark.parametrize("cache_arg", ["root", "hub"])
def test_hf_home_or_its_hub_folder_both_work(tmp_path: Path, cache_arg: str) -> None:
    cache = build_cache(tmp_path)
    assert verify(cache if cache_arg == "root" else cache / "hub")[0] == 0
