"""Build the runtime image once, put the identical image on every node, and prove it is the same.

`build_image` fetches the base's copies of patched files, applies the patch
stages (fail closed), writes the manifest, ships the build context to the
build node and runs `docker build` there; other nodes get the image by
`docker save | docker load` only when their image ID differs (or each node
builds it). `verify_image` checks, per node, the image ID, the manifest baked
into the image against its label, the sha256 of every file the manifest lists
(in throwaway containers) and the declared patch checks. For the bare-metal
`process` runtime, `verify_installation` runs the same file checks against
the node's installed vLLM package.
"""

from __future__ import annotations

import asyncio
import io
import json
import posixpath
import tarfile
from pathlib import Path

from flashspark.cluster.lifecycle import new_run_dir, node_dir
from flashspark.cluster.reports import ImageBuildReport, ImageVerifyReport, NodeBuild, NodeImageCheck
from flashspark.cluster.runtimes import image_id, image_labels
from flashspark.cluster.timeouts import TIMEOUTS
from flashspark.cluster.transport import Transport, pipe_between, transport_for
from flashspark.errors import InputError, NodeUnreachable, ProvenanceError
from flashspark.files import write_json
from flashspark.provenance.image import (
    MANIFEST_LABEL,
    MANIFEST_PATH,
    VERSION_FILE,
    FileProblem,
    ImageManifest,
    build_context,
    build_manifest,
    compare_hashes,
    docker_build_argv,
    parse_sha256sum,
    patch_targets,
    read_in_image_argv,
    read_overlay,
    run_check,
    sha256_in_image_argv,
    vllm_version_from,
)
from flashspark.recipe.model import Recipe


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def read_in_image(transport: Transport, image: str, path: str) -> str | None:
    """A text file's content inside an image (throwaway container), None when absent."""
    result = await transport.run(read_in_image_argv(image, path), timeout_s=TIMEOUTS.image_read_s)
    return result.stdout if result.ok else None


async def copy_image(source: Transport, target: Transport, image: str) -> None:
    """`docker save` on one node streamed into `docker load` on another."""
    failed = await pipe_between(source, ["docker", "save", image], target, ["docker", "load"])
    if failed is not None:
        raise ProvenanceError(
            f"copying {image} from {source.name} to {target.name} failed: {failed}",
            where=target.name,
            fix="check disk space on the target node and that docker runs there",
        )


async def build_image(recipe: Recipe, *, tag: str | None = None, on_each: bool = False) -> ImageBuildReport:
    """Build on the head (or on every node) and make every node hold the identical image.

    The manifest and the report are kept in a new run directory.
    """
    settings = recipe.image
    tag = tag or recipe.cluster.image
    overlay = read_overlay(Path(settings.overlay_dir)) if settings.overlay_dir else {}
    transports = [transport_for(node) for node in recipe.nodes]
    head = transports[0]
    base_id = await image_id(head, settings.base or "")
    if base_id is None:
        raise ProvenanceError(
            f"base image {settings.base!r} is not on {recipe.nodes[0].name}",
            key="image.base",
            value=settings.base,
            where=recipe.nodes[0].name,
            fix="load or build the base image on the build node first",
        )
    if settings.vllm_version is None:
        detected = await read_in_image(head, settings.base or "", posixpath.join(settings.vllm_root, VERSION_FILE))
        settings = settings.model_copy(update={"vllm_version": vllm_version_from(detected)})
    base_files = {}
    for target in patch_targets(settings, overlay):
        text = await read_in_image(head, settings.base or "", posixpath.join(settings.vllm_root, target))
        if text is not None:
            base_files[target] = text.encode()
    manifest, files = build_manifest(settings, tag=tag, overlay=overlay, base_files=base_files, base_id=base_id)
    context = tar_bytes(build_context(manifest, files))
    builders = list(enumerate(transports)) if on_each else [(0, head)]
    rows: dict[str, NodeBuild] = {}
    for rank, transport in builders:
        folder = f"{node_dir(recipe, rank)}/image-build"
        unpack = 'rm -rf "$1" && mkdir -p "$1" && tar -x -C "$1"'
        unpacked = await transport.run(["sh", "-c", unpack, "flashspark-context", folder], stdin=context)
        if not unpacked.ok:
            raise ProvenanceError(f"cannot unpack the build context: {unpacked.stderr.strip()}", where=transport.name)
        built = await transport.run(docker_build_argv(tag, folder), timeout_s=TIMEOUTS.image_build_s)
        if not built.ok:
            raise ProvenanceError(
                f"docker build failed on {transport.name}: {(built.stderr or built.stdout).strip()[-800:]}",
                where=transport.name,
                fix=f"the rendered Dockerfile is {folder}/Dockerfile on that node",
            )
        rows[recipe.nodes[rank].name] = NodeBuild(action="built", image_id=await image_id(transport, tag))
    reference = rows[recipe.nodes[0].name].image_id
    if not on_each:
        for rank, transport in list(enumerate(transports))[1:]:
            current = await image_id(transport, tag)
            if current == reference:
                rows[recipe.nodes[rank].name] = NodeBuild(action="same image, not copied", image_id=current)
                continue
            await copy_image(head, transport, tag)
            rows[recipe.nodes[rank].name] = NodeBuild(action="copied", image_id=await image_id(transport, tag))
    run_dir = new_run_dir(recipe, "image")
    report = ImageBuildReport(
        tag=tag,
        manifest_sha256=manifest.digest(),
        manifest=manifest.model_dump(mode="json"),
        nodes=rows,
        same_image_everywhere=len({r.image_id for r in rows.values()}) == 1,
        run_dir=str(run_dir),
    )
    write_json(run_dir / "image-manifest.json", report.manifest)
    write_json(run_dir / "image-build.json", report.model_dump(mode="json"))
    return report


async def _hashes(transport: Transport, argv: list[str], root: str) -> dict[str, str]:
    """Run a sha256sum argv (its file arguments under root) and read the hashes back by relative path."""
    prefix = root.rstrip("/") + "/"
    if not any(arg.startswith(prefix) for arg in argv):
        return {}  # nothing to hash (sha256sum alone would read stdin)
    result = await transport.run(argv, timeout_s=TIMEOUTS.image_hash_s)
    if result.returncode in (125, 126, 127):  # docker run / the shell could not start sha256sum at all
        raise ProvenanceError(
            f"cannot hash files on {transport.name}: {result.stderr.strip()[-300:]}",
            where=transport.name,
            fix="the image (or node) needs sha256sum (coreutils or busybox)",
        )
    return parse_sha256sum(result.stdout, root)  # missing files only print to stderr


async def _verify_image_node(recipe: Recipe, rank: int, expected: ImageManifest | None) -> NodeImageCheck:
    node = recipe.nodes[rank]
    transport = transport_for(node)
    tag = recipe.cluster.image
    row = NodeImageCheck(node=node.name)
    problems = row.problems
    try:
        row.image_id = await image_id(transport, tag)
        if row.image_id is None:
            problems.append(f"{tag} is not on this node")
            return row
        label = (await image_labels(transport, tag))[1].get(MANIFEST_LABEL, "")
        baked_text = await read_in_image(transport, tag, MANIFEST_PATH)
        if baked_text is None:
            problems.append(f"{MANIFEST_PATH}: no manifest in the image (not built by `flashspark image build`)")
            return row
        baked = ImageManifest.model_validate_json(baked_text)
        row.manifest_sha256 = baked.digest()
        if label != baked.digest():
            problems.append(f"{MANIFEST_PATH}: manifest sha256 {baked.digest()[:12]} != label {label[:12] or 'none'}")
        if expected is not None and expected.digest() != baked.digest():
            problems.append(f"{MANIFEST_PATH}: the image's manifest is not the expected one")
        manifest = expected or baked
        paths = [e.path for e in manifest.entries]
        observed = await _hashes(transport, sha256_in_image_argv(tag, manifest), manifest.vllm_root)
        found: list[FileProblem] = compare_hashes(manifest, dict.fromkeys(paths) | observed)
        for check in manifest.checks:
            text = await read_in_image(transport, tag, manifest.destination(check.file))
            problem = run_check(check, text)
            if problem is not None:
                found.append(problem)
        problems += [f"{p.path}: {p.problem}" for p in found]
    except NodeUnreachable as error:
        problems.append(f"unreachable: {error.message}")
    return row


async def verify_image(recipe: Recipe, *, expected: ImageManifest | None = None) -> ImageVerifyReport:
    """Per node: image ID, manifest (file vs label), every file's sha256, the patch checks; plus one ID everywhere."""
    rows = await asyncio.gather(*(_verify_image_node(recipe, r, expected) for r in range(len(recipe.nodes))))
    same = len({r.image_id for r in rows}) == 1
    problems = []
    if not same:
        listing = ", ".join(f"{r.node}={str(r.image_id)[:19]}" for r in rows)
        problems.append(f"the nodes hold different images: {listing}")
    return ImageVerifyReport(
        tag=recipe.cluster.image,
        nodes=list(rows),
        same_image_everywhere=same,
        problems=problems,
        ok=same and not any(r.problems for r in rows),
    )


async def installed_vllm_root(transport: Transport, python: str) -> str | None:
    """Where the node's Python finds the vllm package (found, not imported: importing takes seconds)."""
    code = "import importlib.util as u; s = u.find_spec('vllm'); print(s.submodule_search_locations[0])"
    result = await transport.run([python, "-c", code], timeout_s=TIMEOUTS.python_probe_s)
    return result.stdout.strip() or None if result.ok else None


async def verify_installation(
    recipe: Recipe, manifest: ImageManifest, *, python: str | None = None
) -> ImageVerifyReport:
    """The bare-metal runtime: the manifest's files and checks against each node's installed vLLM."""

    async def one(rank: int) -> NodeImageCheck:
        node = recipe.nodes[rank]
        transport = transport_for(node)
        interpreter = python or posixpath.join(posixpath.dirname(node.vllm_bin or recipe.cluster.vllm_bin), "python")
        row = NodeImageCheck(node=node.name, python=interpreter)
        try:
            root = await installed_vllm_root(transport, interpreter)
            if root is None:
                row.problems.append(f"{interpreter} cannot find the vllm package")
                return row
            row.vllm_root = root
            paths = [e.path for e in manifest.entries]
            argv = ["sha256sum", *(posixpath.join(root, p) for p in paths)]
            observed = await _hashes(transport, argv, root)
            found = compare_hashes(manifest, dict.fromkeys(paths) | observed)
            for check in manifest.checks:
                text = await transport.run(["cat", posixpath.join(root, check.file)])
                problem = run_check(check, text.stdout if text.ok else None)
                if problem is not None:
                    found.append(problem)
            row.problems += [f"{p.path}: {p.problem}" for p in found]
        except NodeUnreachable as error:
            row.problems.append(f"unreachable: {error.message}")
        return row

    rows = await asyncio.gather(*(one(r) for r in range(len(recipe.nodes))))
    return ImageVerifyReport(manifest_sha256=manifest.digest(), nodes=list(rows), ok=not any(r.problems for r in rows))


def manifest_from_tree(recipe: Recipe, base_root: Path, *, tag: str | None = None) -> ImageManifest:
    """The manifest an image build would write, with patched-base files read from a local vLLM tree."""
    settings = recipe.image
    overlay = read_overlay(Path(settings.overlay_dir)) if settings.overlay_dir else {}
    base_files = {
        target: (base_root / target).read_bytes()
        for target in patch_targets(settings, overlay)
        if (base_root / target).is_file()
    }
    version = settings.vllm_version
    if version is None and (base_root / VERSION_FILE).is_file():
        version = vllm_version_from((base_root / VERSION_FILE).read_text())
    manifest, _ = build_manifest(
        settings.model_copy(update={"base": settings.base or f"local:{base_root}", "vllm_version": version}),
        tag=tag or recipe.cluster.image,
        overlay=overlay,
        base_files=base_files,
        base_id=None,
    )
    return manifest


def load_manifest(path: Path) -> ImageManifest:
    try:
        return ImageManifest.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ProvenanceError(
            f"cannot read the manifest {path}: {exc}", where=str(path), fix="pass a manifest written by image build"
        ) from exc


def write_manifest_from_tree(recipe: Recipe, base_root: Path, out: Path) -> ImageManifest:
    """`image manifest`: the manifest a build would bake in, written to `out` (for a bare-metal vLLM)."""
    manifest = manifest_from_tree(recipe, base_root)
    write_json(out, manifest.model_dump(mode="json"))
    return manifest


async def verify_deployment_image(
    recipe: Recipe, *, manifest_path: Path | None, python: str | None = None
) -> ImageVerifyReport:
    """`image verify`: the compose runtime's image on every node, or the process runtime's installed vLLM."""
    expected = load_manifest(manifest_path) if manifest_path else None
    if recipe.cluster.runtime == "process":
        if expected is None:
            raise InputError(
                "the process runtime has no image to read a manifest from",
                key="--manifest",
                fix="pass --manifest (written by `image build` or `image manifest`)",
            )
        return await verify_installation(recipe, expected, python=python)
    return await verify_image(recipe, expected=expected)
