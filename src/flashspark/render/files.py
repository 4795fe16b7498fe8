"""Write a launch plan to a folder: plan.json, and per node its command and compose file."""

from __future__ import annotations

from pathlib import Path

import yaml

from flashspark.files import write_atomic, write_json
from flashspark.render.envfiles import comment_line, posix_env_file
from flashspark.render.launch import LaunchPlan
from flashspark.render.monitoring import MonitoringFiles


def compose_yaml(document: dict[str, object]) -> str:
    return yaml.safe_dump(document, sort_keys=False, width=1000)


def write_plan_files(plan: LaunchPlan, out: Path, monitoring: MonitoringFiles | None = None) -> list[Path]:
    """Write the plan (and the monitoring parts under monitoring/); returns the files written. Secrets are
    never among them."""
    written = [out / "plan.json"]
    write_json(written[0], plan.model_dump(mode="json"))
    for node in plan.nodes:
        folder = out / f"rank{node.rank}-{node.name}"
        command = folder / "command.sh"
        head = ["#!/bin/sh", comment_line(f"{plan.deployment}: rank {node.rank} ({node.role}) on {node.ssh}")]
        secrets = [comment_line(f"{name}: set from an owner-only env file at launch") for name in node.secret_env]
        text = "\n".join(head + secrets) + "\n" + posix_env_file(node.env) + "exec " + node.command_line() + "\n"
        write_atomic(command, text, mode=0o755)
        written.append(command)
        if node.compose is not None:
            compose = folder / "compose.yaml"
            write_atomic(compose, compose_yaml(node.compose))
            written.append(compose)
    for name, text in (monitoring.files() if monitoring is not None else {}).items():
        path = out / "monitoring" / name
        write_atomic(path, text)
        written.append(path)
    return written
