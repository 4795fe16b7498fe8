"""Write a launch plan to a folder: plan.json, and per node its command and compose file."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import yaml

from flashspark.render.plan import LaunchPlan


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compose_yaml(document: dict[str, object]) -> str:
    return yaml.safe_dump(document, sort_keys=False, width=1000)


def write_plan_files(plan: LaunchPlan, out: Path) -> list[Path]:
    """Write the plan; returns the files written. Secrets are never among them."""
    written = [out / "plan.json"]
    write_atomic(written[0], plan.model_dump_json(indent=2) + "\n")
    for node in plan.nodes:
        folder = out / f"rank{node.rank}-{node.name}"
        command = folder / "command.sh"
        lines = ["#!/bin/sh", f"# {plan.deployment}: rank {node.rank} ({node.role}) on {node.ssh}"]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in node.env.items()]
        lines.append("exec " + node.command_line())
        write_atomic(command, "\n".join(lines) + "\n", mode=0o755)
        written.append(command)
        if node.compose is not None:
            compose = folder / "compose.yaml"
            write_atomic(compose, compose_yaml(node.compose))
            written.append(compose)
    return written
