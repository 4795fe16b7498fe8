"""Provenance: `image build|manifest|verify` and `model prepare|verify`, the same bytes on every node."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from flashspark.cli import console, exit_codes
from flashspark.cli.common import finish, handle_errors, json_option, load_recipe, recipe_options, run
from flashspark.cli.console import escape
from flashspark.errors import InputError

if TYPE_CHECKING:
    from flashspark.cluster.reports import (
        ImageBuildReport,
        ImageVerifyReport,
        ModelPrepareReport,
        ModelVerifyReport,
    )
    from flashspark.provenance.model_cache import ModelCacheReport

DEFAULT_DOWNLOAD_WORKERS = 8


@click.group("image")
def image_group() -> None:
    """The runtime image: build it once, the same on every node, and verify it."""


@image_group.command("build")
@recipe_options
@click.option("--tag", default=None, help="Image tag (default: the recipe's cluster.image).")
@click.option("--on-each", is_flag=True, help="Build on every node instead of copying from the head.")
@json_option
@handle_errors
def image_build(
    config: Path | None, profile: str | None, sets: tuple[str, ...], tag: str | None, on_each: bool, as_json: bool
) -> None:
    """Base image + overlay + fail-closed patch stages, with a manifest baked in as a file and a label.

    \b
    Built on the head; other nodes get it by `docker save | docker load` only
    when their image ID differs (--on-each builds on every node). The manifest
    and the build report are kept in a run directory.
    """
    from flashspark.cluster.images import build_image

    report = run(build_image(load_recipe(config, profile, sets).recipe, tag=tag, on_each=on_each))
    finish(report, as_json, lambda: print_image_build(report))


@image_group.command("manifest")
@recipe_options
@click.option(
    "--base-root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    required=True,
    help="An unpatched vLLM package folder, for the files the patch stages change.",
)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@json_option
@handle_errors
def image_manifest(
    config: Path | None, profile: str | None, sets: tuple[str, ...], base_root: Path, out: Path, as_json: bool
) -> None:
    """Write the manifest a build would bake in (for checking a bare-metal vLLM with `image verify --manifest`)."""
    from flashspark.cluster.images import write_manifest_from_tree

    manifest = write_manifest_from_tree(load_recipe(config, profile, sets).recipe, base_root, out)
    summary = {
        "written": str(out),
        "files": len(manifest.entries),
        "checks": len(manifest.checks),
        "manifest_sha256": manifest.digest(),
    }
    if as_json:
        console.print_json(summary)
    else:
        console.print_plain(
            f"{out}: {summary['files']} files, {summary['checks']} checks, sha256 {summary['manifest_sha256']}"
        )


@image_group.command("verify")
@recipe_options
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Expected manifest (compose: default the one baked into each node's image; process: required).",
)
@click.option("--python", default=None, help="process runtime: the node's Python (default: beside VLLM_BIN).")
@json_option
@handle_errors
def image_verify(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    manifest_path: Path | None,
    python: str | None,
    as_json: bool,
) -> None:
    """Per node: the same image, its manifest, every file's sha256, the patch checks. Exit 4 on any mismatch."""
    from flashspark.cluster.images import verify_deployment_image

    recipe = load_recipe(config, profile, sets).recipe
    report = run(verify_deployment_image(recipe, manifest_path=manifest_path, python=python))
    finish(report, as_json, lambda: print_image_verify(report), ok=report.ok)


@click.group("model")
def model_group() -> None:
    """The model's weights in a node's Hugging Face cache."""


@model_group.command("prepare")
@recipe_options
@click.option("--revision", default=None, help="Default: the recipe's pinned revision (a commit), else main.")
@click.option("--python", default=None, help="The head's interpreter with huggingface_hub (default: python3).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=DEFAULT_DOWNLOAD_WORKERS,
    show_default=True,
    help="Parallel downloads.",
)
@json_option
@handle_errors
def model_prepare(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    revision: str | None,
    python: str | None,
    workers: int,
    as_json: bool,
) -> None:
    """The pinned snapshot in every node's HF_CACHE: the head downloads (only if incomplete), workers copy.

    \b
    Workers already complete at the head's commit are left alone; the others
    get the model's cache folder from the head after a disk-space check. Every
    node is verified at the end (exit 4 when one is not complete).
    """
    from flashspark.cluster.model_prepare import prepare_model

    recipe = load_recipe(config, profile, sets).recipe
    report = run(prepare_model(recipe, revision=revision, python=python, workers=workers))
    finish(report, as_json, lambda: print_model_prepare(report), ok=report.ok)


@model_group.command("verify")
@recipe_options
@click.option(
    "--hf-cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="HF_HOME or its hub folder on this node.",
)
@click.option(
    "--model", "model_id", default=None, help="Hugging Face repo id, e.g. deepseek-ai/DeepSeek-V4-Flash-DSpark."
)
@click.option(
    "--revision", default=None, help="A commit hash or a ref (main, a tag). Default: the recipe's, else main."
)
@click.option("--sha256", is_flag=True, help="Also hash every shard against its blob name (slow for 160 GB).")
@click.option(
    "--all-nodes", is_flag=True, help="Check every node of the cluster file, each in its own HF_CACHE, over SSH."
)
@json_option
@handle_errors
def model_verify(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    hf_cache: Path | None,
    model_id: str | None,
    revision: str | None,
    sha256: bool,
    all_nodes: bool,
    as_json: bool,
) -> None:
    """Every shard of the index present and complete at the pinned revision; exit 4 naming each bad one."""
    if all_nodes:
        from flashspark.cluster.models import verify_model_on_nodes

        recipe = load_recipe(config, profile, sets).recipe
        model = model_id or recipe.model.id
        pinned = revision or recipe.model.revision or "main"
        nodes_report = run(verify_model_on_nodes(recipe, model=model, revision=pinned, sha256=sha256))
        finish(nodes_report, as_json, lambda: print_model_verify_nodes(nodes_report), ok=nodes_report.ok)
        return
    if hf_cache is None or model_id is None:
        raise InputError(
            "model verify needs a cache and a model",
            key="--hf-cache/--model",
            fix="pass --hf-cache DIR and --model REPO_ID (or --all-nodes with a cluster file)",
        )
    from flashspark.provenance.model_cache import verify_model_cache

    report = verify_model_cache(hf_cache, model_id, revision=revision or "main", sha256=sha256)
    finish(report, as_json, lambda: print_model_verify(report), ok=report.ok, fail_code=exit_codes.CHECK_FAILED)


# --- what people read -----------------------------------------------------------------------


def print_model_verify(report: ModelCacheReport) -> None:
    where = f"{report.model}@{report.revision}" + (f" ({report.commit[:12]})" if report.commit else "")
    if report.ok:
        total = sum(s.size or 0 for s in report.shards)
        console.out.print(f"[green]ok[/]: {escape(where)}: {len(report.shards)} shards complete, {total / 1e9:.2f} GB")
        return
    console.err.print(f"[bold red]incomplete[/]: {escape(where)}")
    for problem in report.problems:
        console.err.print(f"  {escape(problem)}")


def print_model_prepare(report: ModelPrepareReport) -> None:
    for row in report.nodes:
        status = "ok" if row.ok else "; ".join(row.problems)
        console.print_plain(f"{row.node}: {row.action} -> {status}")


def print_image_build(report: ImageBuildReport) -> None:
    console.out.print(f"image {escape(report.tag)}: manifest sha256 {report.manifest_sha256[:16]}…")
    for node, row in report.nodes.items():
        console.out.print(f"  {node}: {row.action} ({str(row.image_id)[:19]})")
    verdict = "[green]the same image on every node[/]" if report.same_image_everywhere else "[red]images differ[/]"
    console.out.print(f"  {verdict}; manifest and Dockerfile record in {report.run_dir}")


def print_image_verify(report: ImageVerifyReport) -> None:
    table = console.table(title=f"image verify {escape(report.tag or '(installed vLLM)')}")
    for column in ("node", "image / vLLM root", "manifest", "result"):
        table.add_column(column)
    for row in report.nodes:
        where = str(row.image_id or row.vllm_root or "")[:40]
        manifest = str(row.manifest_sha256 or report.manifest_sha256 or "")[:12]
        result = "[green]ok[/]" if not row.problems else "[red]" + escape("; ".join(row.problems)) + "[/]"
        table.add_row(row.node, escape(where), manifest, result)
    console.out.print(table)
    for problem in report.problems:
        console.err.print(f"[red]{escape(problem)}[/]")
    console.out.print("[green]verified[/]" if report.ok else "[bold red]verification FAILED[/]")


def print_model_verify_nodes(report: ModelVerifyReport) -> None:
    console.out.print(f"model {escape(report.model)} at {escape(report.revision)}, per node:")
    for row in report.nodes:
        commit = (row.report.commit if row.report else None) or "?"
        if row.ok:
            shards = len(row.report.shards) if row.report else 0
            console.out.print(f"  [green]{row.node}: ok[/] ({shards} shards, commit {commit[:12]})")
        else:
            console.out.print(f"  [red]{row.node}: " + escape("; ".join(row.problems)) + "[/]")
    if not report.same_commit_everywhere:
        console.err.print("[red]the nodes hold different commits[/]")
