"""The image as data: fail-closed patch stages, the manifest's hashes, the rendered Dockerfile."""

from __future__ import annotations

import hashlib
import json

import pytest

from flashspark.errors import PatchFailed
from flashspark.provenance.image import (
    MANIFEST_LABEL,
    MANIFEST_PATH,
    apply_patch,
    build_context,
    build_manifest,
    compare_hashes,
    docker_build_argv,
    parse_sha256sum,
    read_in_image_argv,
    render_dockerfile,
    run_check,
    sha256_in_image_argv,
    vllm_version_from,
)
from flashspark.recipe.model import ImageSettings, PatchCheck, PatchStage

GUARD = PatchStage(
    name="patch3-guard",
    file="v1/core/sched/scheduler.py",
    anchor="        if new_token_ids:\n            resize(request)\n",
    replacement="        if new_token_ids and not request.is_prefill_chunk:\n            resize(request)\n",
)
SCHEDULER = "def update(request, new_token_ids):\n        if new_token_ids:\n            resize(request)\n"


def test_a_stage_replaces_its_anchor_once_and_is_idempotent() -> None:
    patched = apply_patch(SCHEDULER, GUARD)
    assert "not request.is_prefill_chunk" in patched and GUARD.anchor not in patched
    assert apply_patch(patched, GUARD) == patched


def test_an_anchor_that_no_longer_matches_fails_closed_naming_the_file() -> None:
    drifted = SCHEDULER.replace("if new_token_ids:", "if new_token_ids is not None:")
    with pytest.raises(PatchFailed, match=r"no longer matches in v1/core/sched/scheduler\.py") as failure:
        apply_patch(drifted, GUARD)
    assert failure.value.where == "v1/core/sched/scheduler.py" and failure.value.fix


def test_a_replacement_seen_elsewhere_does_not_count_as_applied() -> None:
    short = GUARD.model_copy(update={"anchor": "if request.never_there:", "replacement": "resize"})
    with pytest.raises(PatchFailed, match="no longer matches"):
        apply_patch(SCHEDULER + "resize(other)\n", short)


def test_an_ambiguous_anchor_fails_closed_too() -> None:
    with pytest.raises(PatchFailed, match="matches 2 times"):
        apply_patch(SCHEDULER + SCHEDULER, GUARD)


def settings(**update: object) -> ImageSettings:
    base = ImageSettings(base="vllm-base:1", vllm_root="/opt/env/lib/python3.12/site-packages/vllm", patches=[GUARD])
    return base.model_copy(update=update)


def test_the_manifest_hashes_the_bytes_that_go_into_the_image() -> None:
    overlay = {"v1/spec_decode/dspark.py": b"DSPARK = 1\n"}
    manifest, files = build_manifest(
        settings(), tag="rt:1", overlay=overlay, base_files={GUARD.file: SCHEDULER.encode()}, base_id="sha256:b"
    )
    by_path = {e.path: e for e in manifest.entries}
    assert by_path["v1/spec_decode/dspark.py"].sha256 == hashlib.sha256(b"DSPARK = 1\n").hexdigest()
    patched = SCHEDULER.replace(GUARD.anchor, GUARD.replacement).encode()  # the stage, applied by hand
    assert files[GUARD.file] == patched
    assert by_path[GUARD.file].sha256 == hashlib.sha256(patched).hexdigest()
    assert (by_path[GUARD.file].origin, by_path[GUARD.file].patches) == ("patched-base", ["patch3-guard"])
    changed = build_manifest(
        settings(),
        tag="rt:1",
        overlay={"v1/spec_decode/dspark.py": b"DSPARK = 2\n"},
        base_files={GUARD.file: SCHEDULER.encode()},
        base_id="sha256:b",
    )[0]
    assert changed.digest() != manifest.digest()  # one byte of one file changes the manifest's identity


def test_a_patch_on_a_file_nowhere_to_be_found_fails_closed() -> None:
    with pytest.raises(PatchFailed, match="neither in the overlay nor in the base image"):
        build_manifest(settings(), tag="rt:1", overlay={}, base_files={}, base_id=None)


def test_the_rendered_dockerfile_copies_every_entry_and_labels_the_manifest() -> None:
    overlay = {"a.py": b"a\n", "sub/b.py": b"b\n"}
    manifest, files = build_manifest(
        settings(patches=[]), tag="rt:1", overlay=overlay, base_files={}, base_id="sha256:b"
    )
    lines = render_dockerfile(manifest).splitlines()
    assert lines[1] == "FROM vllm-base:1"
    copies = [line.split(" ", 2) for line in lines if line.startswith("COPY files/")]
    assert [json.loads(dest) for _, _, dest in copies] == [
        "/opt/env/lib/python3.12/site-packages/vllm/a.py",
        "/opt/env/lib/python3.12/site-packages/vllm/sub/b.py",
    ]
    assert f"COPY image-manifest.json {MANIFEST_PATH}" in lines
    label = next(line for line in lines if line.startswith("LABEL "))
    assert f'{MANIFEST_LABEL}="{manifest.digest()}"' in label
    context = build_context(manifest, files)
    assert {context[src] for _, src, _ in copies} == {b"a\n", b"b\n"}
    assert json.loads(context["image-manifest.json"]) == manifest.model_dump(mode="json")


def test_hash_comparison_names_changed_and_missing_files() -> None:
    manifest, _ = build_manifest(
        settings(patches=[]), tag="t", overlay={"a.py": b"a", "b.py": b"b"}, base_files={}, base_id=None
    )
    sha_a = hashlib.sha256(b"a").hexdigest()
    listing = f"{sha_a}  /opt/env/lib/python3.12/site-packages/vllm/a.py\n"
    observed = parse_sha256sum(listing, manifest.vllm_root)
    assert observed == {"a.py": sha_a}
    assert [(p.path, p.problem) for p in compare_hashes(manifest, observed)] == [("b.py", "missing")]
    wrong = {"a.py": "0" * 64, "b.py": hashlib.sha256(b"b").hexdigest()}
    [problem] = compare_hashes(manifest, wrong)
    assert problem.path == "a.py" and problem.problem.startswith("sha256 000000000000 != manifest")


def test_a_check_wants_the_guard_not_the_identifier() -> None:
    check = PatchCheck(
        name="patch3", file="scheduler.py", pattern=r"^\s+if new_token_ids and not request\.is_prefill_chunk:", count=1
    )
    unpatched = SCHEDULER + "x = request.is_prefill_chunk\n"  # the identifier alone is not the guard
    assert run_check(check, apply_patch(SCHEDULER, GUARD)) is None
    problem = run_check(check, unpatched)
    assert problem is not None and problem.path == "scheduler.py" and "found 0 times, wanted 1" in problem.problem
    assert run_check(check, None) is not None


def test_build_and_verify_commands_as_data() -> None:
    manifest, _ = build_manifest(
        settings(patches=[]), tag="rt:1", overlay={"a.py": b"a", "sub/b.py": b"b"}, base_files={}, base_id=None
    )
    assert docker_build_argv("rt:1", "/srv/ctx") == ["docker", "build", "--pull=false", "-t", "rt:1", "/srv/ctx"]
    root = "/opt/env/lib/python3.12/site-packages/vllm"
    assert sha256_in_image_argv("rt:1", manifest) == [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sha256sum",
        "rt:1",
        f"{root}/a.py",
        f"{root}/sub/b.py",
    ]
    # the image's own entrypoint never runs, and nothing reaches the network
    assert read_in_image_argv("rt:1", MANIFEST_PATH)[:7] == [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "cat",
    ]


def test_vllm_version_is_read_from_its_generated_file() -> None:
    generated = "__version__ = version = '0.21.1rc1.dev42+gabc'\n__version_tuple__ = version_tuple = (0, 21)\n"
    assert vllm_version_from(generated) == "0.21.1rc1.dev42+gabc"
    assert vllm_version_from('__version__ = "0.32.0"\n') == "0.32.0"
    assert vllm_version_from(None) is None and vllm_version_from("nothing here") is None
