"""The compose document one node gets, field by field, written out by hand: what Docker must be told
for a DSpark node (host network and IPC, init, a 64 MiB stack, unlimited locked memory and the
verbs devices on RoCE, labels that `down` finds, a healthcheck on the head alone)."""

from __future__ import annotations

from pathlib import Path

from flashspark.recipe import resolve_recipe
from flashspark.recipe.model import Recipe
from flashspark.render.compose import project_name, render_compose


def recipe(tmp_path: Path, fabric: str, name: str = "My.Deploy_1") -> Recipe:
    toml = tmp_path / "c.toml"
    toml.write_text(
        f'profile = "agent-1m"\n[cluster]\nname = "{name}"\nruntime = "compose"\nfabric = "{fabric}"\n'
        'image = "vllm-dspark:pinned"\n[api]\nport = 8123\n'
        '[[nodes]]\nname = "head"\nssh = "spark@10.0.0.1"\nhf_cache = "/data/hf$cache"\n'
        '[[nodes]]\nname = "w1"\nssh = "spark@10.0.0.2"\n'
    )
    return resolve_recipe(config=toml, strict=False).recipe


def test_the_head_service_on_roce(tmp_path: Path) -> None:
    r = recipe(tmp_path, "roce")
    document = render_compose(r, r.nodes[0], rank=0, argv=["vllm", "serve", "m$x"], env={"A": "1$2"}, has_secrets=True)
    assert document["name"] == "my-deploy_1"
    service = document["services"]["vllm"]
    url = "http://127.0.0.1:8123/health"
    assert service == {
        "image": "vllm-dspark:pinned",
        "entrypoint": ["vllm"],
        "command": ["serve", "m$$x"],
        "network_mode": "host",
        "ipc": "host",
        "shm_size": r.cluster.shm_size,
        "init": True,
        "restart": r.cluster.restart_policy,
        "stop_grace_period": "30s",
        "ulimits": {"stack": 67108864, "memlock": -1},
        "environment": {"A": "1$$2"},
        "labels": {
            "io.flashspark.deployment": "My.Deploy_1",
            "io.flashspark.profile": "agent-1m",
            "io.flashspark.node": "head",
            "io.flashspark.rank": "0",
            "io.flashspark.role": "head",
        },
        "devices": ["/dev/infiniband:/dev/infiniband"],
        "gpus": "all",
        "volumes": ["/data/hf$$cache:/cache/huggingface"],
        "env_file": [{"path": "secrets.env", "required": False}],
        "healthcheck": {
            "test": ["CMD-SHELL", f"curl -fsS {url} >/dev/null || wget -qO- {url} >/dev/null"],
            "interval": "30s",
            "timeout": "10s",
            "retries": 3,
            "start_period": "20m",
        },
    }


def test_a_worker_on_ethernet_has_no_healthcheck_rdma_or_secrets_file(tmp_path: Path) -> None:
    r = recipe(tmp_path, "tcp")
    service = render_compose(r, r.nodes[1], rank=1, argv=["vllm"], env={}, has_secrets=False)["services"]["vllm"]
    assert service["ulimits"] == {"stack": 67108864}
    assert service["labels"]["io.flashspark.role"] == "worker" and service["labels"]["io.flashspark.rank"] == "1"
    assert not {"healthcheck", "devices", "gpus", "env_file", "volumes"} & set(service)
    assert service["entrypoint"] == ["vllm"] and service["command"] == []


def test_the_project_name_is_the_deployment_name_in_lower_case_with_safe_characters(tmp_path: Path) -> None:
    assert project_name(recipe(tmp_path, "tcp", name="Prod.A-b_C9")) == "prod-a-b_c9"
