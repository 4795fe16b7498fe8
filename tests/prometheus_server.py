"""A real Prometheus (Debian's binary) for the watch tests and benchmarks/fault_to_alert.py: the recipe's
rendered scrape config and rules written to a folder, the server started on a port, its alerts read."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import IO, Any

import yaml

from flashspark.recipe.model import Recipe
from flashspark.render.monitoring import alert_rules, prometheus_config


def start_prometheus(
    recipe: Recipe, folder: Path, port: int, *, interval_s: float, hold: str = "1m", log: IO[str] | None = None
) -> subprocess.Popen[bytes]:
    """Prometheus scraping and evaluating every `interval_s`, each alert held `hold` (the canary's 0m)."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (Debian package prometheus; scripts/test.sh installs it)")
    config = prometheus_config(recipe, scrape_interval_s=interval_s, evaluation_interval_s=interval_s)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    (folder / "rules.yml").write_text(yaml.safe_dump(alert_rules(recipe, hold=hold)))
    return subprocess.Popen(
        [
            binary,
            "--config.file=prometheus.yml",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=log if log is not None else subprocess.DEVNULL,
    )


def firing(port: int) -> list[dict[str, Any]]:
    """The alerts firing now (OSError while Prometheus is still starting)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as answer:
        return [a for a in json.loads(answer.read())["data"]["alerts"] if a["state"] == "firing"]
