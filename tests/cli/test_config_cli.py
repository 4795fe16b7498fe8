"""The spine's command-line interface, as the acceptance checks call it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from flashspark.cli.main import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_check_filled_reference_env_exits_0(filled_env: Path) -> None:
    code, out, _ = run("config", "check", "--env", str(filled_env))
    assert code == 0
    assert "ok" in out


BROKEN = [
    ("MASTER_ADDR=192.168.192.3", "MASTER_ADDR=head-roce-ip", "MASTER_ADDR"),
    ("NCCL_IB_HCA=rocep1s0f0", "NCCL_IB_HCA=rocepXsYfZ", "NCCL_IB_HCA"),
    ("WORKER_VLLM_HOST_IP=192.168.192.4", "WORKER_VLLM_HOST_IP=192.168.192.3", "WORKER_VLLM_HOST_IP"),
    ("WORKER_VLLM_HOST_IP=192.168.192.4", "WORKER_VLLM_HOST_IP=", "WORKER_VLLM_HOST_IP"),
    ("MTP_NUM_TOKENS=5", "MTP_NUM_TOKENS=7", "MTP_NUM_TOKENS"),
    ("GPU_MEMORY_UTILIZATION=0.80", "GPU_MEMORY_UTILIZATION=1.5", "GPU_MEMORY_UTILIZATION"),
    ("MAX_NUM_SEQS=6", "MAX_NUM_SEQS=lots", "MAX_NUM_SEQS"),
    ("VLLM_HOST=127.0.0.1", "VLLM_HOST=0.0.0.0", "VLLM_HOST"),
    ("MASTER_PORT=25440", "MASTER_PORT=8888", "MASTER_PORT"),
    ("VLLM_PORT=8888", "VLLM_PORT=99999", "VLLM_PORT"),
]


@pytest.mark.parametrize(("good", "bad", "key"), BROKEN)
def test_check_broken_variant_exits_2_naming_the_key(
    tmp_path: Path, filled_env: Path, good: str, bad: str, key: str
) -> None:
    text = filled_env.read_text()
    assert good in text
    path = tmp_path / ".env.dspark"
    path.write_text(text.replace(good, bad))
    code, _, err = run("config", "check", "--env", str(path))
    assert code == 2
    assert f"error: {key} " in err
    assert "fix:" in err
    assert "Traceback" not in err


def test_check_json_lists_problems_with_key_rule_fix(tmp_path: Path, filled_env: Path) -> None:
    path = tmp_path / ".env.dspark"
    path.write_text(filled_env.read_text().replace("MTP_NUM_TOKENS=5", "MTP_NUM_TOKENS=7"))
    code, out, _ = run("config", "check", "--env", str(path), "--json")
    payload = json.loads(out)
    assert code == 2 and payload["ok"] is False
    problem = next(p for p in payload["problems"] if p["severity"] == "error")
    assert problem["key"] == "MTP_NUM_TOKENS" and problem["value"] == "7"
    line = filled_env.read_text().splitlines().index("MTP_NUM_TOKENS=5") + 1
    assert problem["where"] == f"{path}:{line}"
    assert problem["rule"] and problem["fix"]


def test_check_unknown_key_warns_but_passes(tmp_path: Path, filled_env: Path) -> None:
    path = tmp_path / ".env.dspark"
    path.write_text(filled_env.read_text() + "MAX_NUM_SEQ=4\nSOMETHING_ELSE=1\n")
    code, _, err = run("config", "check", "--env", str(path))
    assert code == 0
    assert "warning: MAX_NUM_SEQ " in err and "did you mean MAX_NUM_SEQS" in err
    assert "warning: SOMETHING_ELSE " in err


def test_render_json_has_nodes_with_rank_argv_env(filled_env: Path) -> None:
    code, out, _ = run("config", "render", "--env", str(filled_env), "--profile", "agent-1m", "--json")
    assert code == 0
    nodes = json.loads(out)["nodes"]
    assert [n["rank"] for n in nodes] == [0, 1]
    worker = nodes[1]
    assert worker["argv"][:2] == ["vllm", "serve"]
    assert "--headless" in worker["argv"]
    assert worker["argv"][worker["argv"].index("--node-rank") + 1] == "1"
    assert worker["env"]["VLLM_HOST_IP"] == "192.168.192.4"


def test_render_refuses_an_invalid_recipe_with_exit_2(tmp_path: Path, filled_env: Path) -> None:
    path = tmp_path / ".env.dspark"
    path.write_text(filled_env.read_text().replace("MTP_NUM_TOKENS=5", "MTP_NUM_TOKENS=7"))
    code, out, _ = run("config", "render", "--env", str(path), "--json")
    assert code == 2
    assert json.loads(out)["problems"][-1]["key"] == "MTP_NUM_TOKENS"


def test_render_out_writes_the_files(tmp_path: Path, filled_env: Path) -> None:
    code, _, _ = run("config", "render", "--env", str(filled_env), "--out", str(tmp_path / "r"))
    assert code == 0
    assert (tmp_path / "r" / "rank1-worker1" / "compose.yaml").is_file()


def test_init_writes_a_template_that_check_refuses_until_filled(tmp_path: Path) -> None:
    code, _, _ = run("config", "init", str(tmp_path / ".env.dspark"))
    assert code == 0
    code, _, err = run("config", "check", "--env", str(tmp_path / ".env.dspark"))
    assert code == 2
    for key in ("VLLM_HOST_IP", "NCCL_IB_HCA", "WORKER_HOST", "MASTER_ADDR"):
        assert f"error: {key} " in err
    code, _, err = run("config", "init", str(tmp_path / ".env.dspark"))
    assert code != 0 and "--force" in err


def test_init_toml_template_parses_and_names_its_placeholders(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    assert run("config", "init", str(path))[0] == 0
    code, out, _ = run("config", "check", "--env", str(path), "--json")
    assert code == 2
    keys = {p["key"] for p in json.loads(out)["problems"] if p["severity"] == "error"}
    assert {"MASTER_ADDR", "VLLM_HOST_IP", "WORKER_VLLM_HOST_IP", "NCCL_IB_HCA"} <= keys


def test_profiles_lists_every_shipped_profile() -> None:
    code, out, _ = run("profiles", "--json")
    names = [p["name"] for p in json.loads(out)["profiles"]]
    assert code == 0
    assert set(names) == {
        "agent-1m",
        "throughput-200k",
        "balanced-500k",
        "deep-1m",
        "diag-262k-fp8",
        "single-stream",
        "local-cpu",
    }


def test_profiles_show_one_prints_its_evidence_and_env_groups() -> None:
    code, out, _ = run("profiles", "agent-1m")
    assert code == 0
    assert "1,990,142" in out and "VLLM_USE_B12X_MOE=1" in out and "repetition_penalty" in out


def test_the_installed_console_script_runs() -> None:
    script = Path(sys.executable).parent / "flashspark"
    result = subprocess.run(
        [str(script), "config", "check", "--profile", "local-cpu", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


FILLED = {
    "head-roce-ip": "192.168.192.3",
    "worker-roce-ip": "192.168.192.4",
    "worker-host-or-roce-ip": "spark2",
    "rocepXsYfZ": "rocep1s0f0",
    "enpXsYfZnpN": "enp1s0f0np0",
}


@pytest.mark.parametrize("name", [".env.dspark", "cluster.toml"])
def test_a_filled_template_leaves_every_default_to_the_profile_or_the_defaults(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert run("config", "init", str(path))[0] == 0
    text = path.read_text()
    for placeholder, value in FILLED.items():
        text = text.replace(placeholder, value)
    path.write_text(text)
    code, out, _ = run("config", "check", "--env", str(path), "--json")
    payload = json.loads(out)
    assert code == 0, payload["problems"]
    origins = payload["origins"]
    defaulted = [
        "cluster.master_port",
        "api.port",
        "api.host",
        "model.id",
        "model.served_name",
        "cluster.image",
        "cluster.runtime",
        "engine.max_num_seqs",
        "engine.max_model_len",
        "profile.name",
    ]
    assert {key: origins[key] for key in defaulted} == dict.fromkeys(defaulted, "default") | {
        "engine.max_num_seqs": "profile:agent-1m",
        "engine.max_model_len": "profile:agent-1m",
        "profile.name": "profile:agent-1m",
        "cluster.runtime": "profile:agent-1m",
    }
    # ... while what the user filled in does come from the file.
    assert str(path) in origins["cluster.master_addr"]
    # Every default is still shown, as a comment with its current value.
    assert "# MASTER_PORT=25000" in path.read_text() or "# master_port = 25000" in path.read_text()
