"""The runtime image as data: overlay files, fail-closed patch stages, a manifest, a Dockerfile.

Patches are applied here, before the build, to the overlay file or to the
base image's own copy of the file (fetched by the caller); the patched text
is then copied into the image like any overlay file. So every file FlashSpark
puts into the image is known, byte for byte, when the manifest is written,
and `image verify` checks all of them the same way: by sha256 inside the
image (or in a node's bare-metal vLLM), plus the declared patch checks.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from flashspark.errors import FlashsparkError, PatchFailed
from flashspark.recipe.model import ImageSettings, PatchCheck, PatchStage

MANIFEST_SCHEMA_VERSION = 1
MANIFEST_PATH = "/etc/flashspark/image-manifest.json"
MANIFEST_LABEL = "io.flashspark.manifest-sha256"
BASE_LABEL = "io.flashspark.base-image-id"


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="Relative to the vLLM package root.")
    sha256: str
    size: int
    origin: str = Field(description="overlay | patched-overlay | patched-base")
    patches: list[str] = Field(default_factory=list)


class ImageManifest(BaseModel):
    """What FlashSpark put into the image: baked in as a file and named by a label (its sha256)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    tag: str
    base: str
    base_id: str | None
    vllm_root: str
    vllm_version: str | None
    entries: list[ManifestEntry]
    checks: list[PatchCheck] = Field(default_factory=list)

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def destination(self, path: str) -> str:
        return posixpath.join(self.vllm_root, path)


def read_overlay(folder: Path) -> dict[str, bytes]:
    """Every file under the overlay folder, by path relative to it (= relative to the vLLM root)."""
    if not folder.is_dir():
        raise FlashsparkError(
            f"overlay folder {folder} does not exist",
            key="image.overlay_dir",
            value=str(folder),
            fix="point image.overlay_dir at your vLLM overlay (files laid out as in the vllm package)",
        )
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files


def apply_patch(text: str, stage: PatchStage) -> str:
    """The stage applied to text; unchanged when already applied; PatchFailed when the anchor is gone.

    "Already applied" means the anchor is gone and the replacement is there exactly
    once: a short replacement that occurs anywhere else proves nothing.
    """
    if stage.anchor not in text and text.count(stage.replacement) == 1:
        return text
    found = text.count(stage.anchor)
    if found != 1:
        reason = "no longer matches" if found == 0 else f"matches {found} times (must be exactly once)"
        raise PatchFailed(
            f"patch stage {stage.name!r}: the anchor {reason} in {stage.file}",
            key="image.patches",
            value=stage.name,
            where=stage.file,
            fix="the base or overlay changed under the patch: update the anchor to the new code, or drop the stage",
        )
    return text.replace(stage.anchor, stage.replacement)


def patch_targets(settings: ImageSettings, overlay: dict[str, bytes]) -> list[str]:
    """Files the patches touch that the overlay does not carry: the caller fetches them from the base."""
    return sorted({p.file for p in settings.patches} - set(overlay))


def build_manifest(
    settings: ImageSettings,
    *,
    tag: str,
    overlay: dict[str, bytes],
    base_files: dict[str, bytes],
    base_id: str | None,
) -> tuple[ImageManifest, dict[str, bytes]]:
    """The manifest and the final bytes of every file to copy in (patches applied, fail closed)."""
    if not settings.base:
        raise FlashsparkError("no base image", key="image.base", fix="set image.base to the runtime image to extend")
    final = dict(overlay)
    origin = {path: "overlay" for path in overlay}
    applied: dict[str, list[str]] = {}
    for stage in settings.patches:
        source = final.get(stage.file, base_files.get(stage.file))
        if source is None:
            raise PatchFailed(
                f"patch stage {stage.name!r}: {stage.file} is neither in the overlay nor in the base image",
                key="image.patches",
                value=stage.name,
                where=stage.file,
                fix="check the file path (relative to the vLLM package root)",
            )
        final[stage.file] = apply_patch(source.decode(), stage).encode()
        origin[stage.file] = "patched-overlay" if stage.file in overlay else "patched-base"
        applied.setdefault(stage.file, []).append(stage.name)
    entries = [
        ManifestEntry(
            path=path,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            origin=origin[path],
            patches=applied.get(path, []),
        )
        for path, data in sorted(final.items())
    ]
    manifest = ImageManifest(
        tag=tag,
        base=settings.base,
        base_id=base_id,
        vllm_root=settings.vllm_root,
        vllm_version=settings.vllm_version,
        entries=entries,
        checks=list(settings.checks),
    )
    return manifest, final


def context_name(index: int) -> str:
    # Flat, numbered names in the build context: no path in the overlay can escape it.
    return f"files/{index:04d}"


def render_dockerfile(manifest: ImageManifest) -> str:
    """FROM the base, one COPY per file to its destination, the manifest as a file and a label."""
    lines = [
        "# Rendered by `flashspark image build`; the manifest lists every file copied below.",
        f"FROM {manifest.base}",
    ]
    for index, entry in enumerate(manifest.entries):
        lines.append(f"COPY {context_name(index)} {json.dumps(manifest.destination(entry.path))}")
    lines.append(f"COPY image-manifest.json {MANIFEST_PATH}")
    labels = {MANIFEST_LABEL: manifest.digest(), BASE_LABEL: manifest.base_id or ""}
    lines.append("LABEL " + " ".join(f"{key}={json.dumps(value)}" for key, value in labels.items()))
    return "\n".join(lines) + "\n"


def build_context(manifest: ImageManifest, files: dict[str, bytes]) -> dict[str, bytes]:
    """Every file of the docker build context, by its name in the context."""
    context = {"Dockerfile": render_dockerfile(manifest).encode(), "image-manifest.json": manifest.canonical().encode()}
    for index, entry in enumerate(manifest.entries):
        context[context_name(index)] = files[entry.path]
    return context


class FileProblem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    problem: str


def compare_hashes(manifest: ImageManifest, observed: dict[str, str | None]) -> list[FileProblem]:
    """Manifest hashes against what a node has (path -> sha256, None when the file is missing)."""
    problems = []
    for entry in manifest.entries:
        seen = observed.get(entry.path)
        if seen is None:
            problems.append(FileProblem(path=entry.path, problem="missing"))
        elif seen != entry.sha256:
            problems.append(FileProblem(path=entry.path, problem=f"sha256 {seen[:12]} != manifest {entry.sha256[:12]}"))
    return problems


def run_check(check: PatchCheck, text: str | None) -> FileProblem | None:
    """None when the pattern is there as declared; else what is wrong, naming the file."""
    if text is None:
        return FileProblem(path=check.file, problem=f"check {check.name!r}: file missing")
    found = len(re.findall(check.pattern, text, flags=re.MULTILINE))
    if (check.count is None and found >= 1) or found == check.count:
        return None
    wanted = "at least 1" if check.count is None else str(check.count)
    return FileProblem(path=check.file, problem=f"check {check.name!r}: pattern found {found} times, wanted {wanted}")


VERSION_FILE = "_version.py"
_VERSION = re.compile(r"""^__version__\s*=\s*(?:version\s*=\s*)?['"]([^'"]+)['"]""", re.MULTILINE)


def vllm_version_from(version_file: str | None) -> str | None:
    """vLLM's version from its generated `vllm/_version.py` (read in the image or the tree, never imported)."""
    if not version_file:
        return None
    match = _VERSION.search(version_file)
    return match.group(1) if match else None


def docker_build_argv(tag: str, folder: str) -> list[str]:
    """The build on the build node: the rendered context folder, nothing pulled (the base is local)."""
    return ["docker", "build", "--pull=false", "-t", tag, folder]


def _in_throwaway_container(image: str, program: str, *args: str) -> list[str]:
    """`program args` in a container removed afterwards, with no network, the image's entrypoint bypassed."""
    return ["docker", "run", "--rm", "--network", "none", "--entrypoint", program, image, *args]


def read_in_image_argv(image: str, path: str) -> list[str]:
    """A file's content from a throwaway container: no entrypoint of the image runs."""
    return _in_throwaway_container(image, "cat", path)


def sha256_in_image_argv(image: str, manifest: ImageManifest) -> list[str]:
    """sha256 of every file the manifest lists, in one throwaway container."""
    return _in_throwaway_container(image, "sha256sum", *(manifest.destination(e.path) for e in manifest.entries))


def parse_sha256sum(text: str, root: str) -> dict[str, str]:
    """`sha256sum` output (hash, two spaces, absolute path) as path-relative-to-root -> hash."""
    found = {}
    prefix = root.rstrip("/") + "/"
    for line in text.splitlines():
        digest, _, path = line.partition("  ")
        if len(digest) == 64 and path.startswith(prefix):
            found[path[len(prefix) :]] = digest
    return found
