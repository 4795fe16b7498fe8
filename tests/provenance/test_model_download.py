"""`model prepare`'s download path: the head's cache is empty, so it downloads the pinned snapshot
with huggingface_hub (from the engine's environment) against a stand-in hub, then verifies it."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from flashspark.cluster.model_prepare import prepare_model
from flashspark.engine.install import find_engine
from flashspark.errors import ProvenanceError
from flashspark.recipe import resolve_recipe
from flashspark.recipe.model import Recipe
from tests.conftest import ENGINE_DIR
from tests.provenance.hub_standin import HubStandIn
from tests.provenance.test_model_verify import safetensors_bytes

MODEL = "example-org/tiny-download"
COMMIT = "c0ffee00" + "1" * 32
TOKEN = "hf_standinTokenForTheDownloadTest01"

pytestmark = pytest.mark.engine  # the download runs with the engine's Python (it has huggingface_hub)


def repo_files() -> dict[str, bytes]:
    shards = {f"model-{i:05d}-of-00002.safetensors": safetensors_bytes(2048 + i * 100, name=f"w{i}") for i in (1, 2)}
    index = {"weight_map": {f"w{i}": name for i, name in enumerate(shards, start=1)}}
    return {"config.json": b'{"model_type": "llama"}', "model.safetensors.index.json": json.dumps(index).encode()} | (
        shards
    )


def engine_python() -> str:
    engine = find_engine(Path(ENGINE_DIR))
    if engine is None:
        pytest.fail("the engine is not installed: run scripts/test.sh (it installs it before pytest)")
    return str(Path(engine.root) / "bin" / "python")


def recipe_for(cache: Path, monkeypatch: pytest.MonkeyPatch, hub: HubStandIn) -> Recipe:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    toml = cache.parent / "c.toml"
    toml.write_text(
        f'profile = "local-cpu"\n[model]\nid = "{MODEL}"\n'
        f'[cluster]\nhf_token = "{TOKEN}"\n[[nodes]]\nname = "head"\nssh = "local"\nhf_cache = "{cache}"\n'
    )
    return resolve_recipe(config=toml).recipe


def test_an_empty_head_cache_is_filled_from_the_hub_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = repo_files()
    with HubStandIn(MODEL, COMMIT, files) as hub:
        recipe = recipe_for(tmp_path / "cache", monkeypatch, hub)
        report = asyncio.run(prepare_model(recipe, python=engine_python(), workers=2))
        again = asyncio.run(prepare_model(recipe, python=engine_python(), workers=2))
    assert report.ok, report
    [head] = report.nodes
    assert head.action == f"downloaded {sum(len(d) for d in files.values()):,} bytes" and head.commit == COMMIT
    assert sorted(hub.downloads) == sorted(files)  # each file once; the second prepare downloaded nothing
    assert again.nodes[0].action == "complete, not downloaded"
    assert f"Bearer {TOKEN}" in hub.authorization  # the token reached the hub through the environment


def test_a_download_that_fails_names_the_node_and_leaves_no_false_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HubStandIn("someone-else/other-model", COMMIT, repo_files()) as hub:
        recipe = recipe_for(tmp_path / "cache", monkeypatch, hub)
        with pytest.raises(ProvenanceError, match="download on head failed") as failed:
            asyncio.run(prepare_model(recipe, python=engine_python(), workers=1))
    assert failed.value.where == "head" and TOKEN not in str(failed.value.message)
    assert not os.path.exists(tmp_path / "cache" / "hub" / f"models--{MODEL.replace('/', '--')}" / "snapshots")
