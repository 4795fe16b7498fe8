"""Prometheus and Grafana as rendered parts of the plan: the rules and config pass the real `promtool`,
the compose services pass the real `docker compose config`, and everything listens on loopback.
The rules firing on real scrapes is in tests/engine/test_watch_engine.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flashspark.recipe import profile_names, resolve_recipe
from flashspark.render import render_plan
from flashspark.render.files import write_plan_files
from flashspark.render.monitoring import alert_rules, render_monitoring, scrape_targets
from tests.render.test_compose_config import compose_config

ALERTS = {
    "FlashSparkEngineDown",
    "FlashSparkHealthFailing",
    "FlashSparkKVCacheNearFull",
    "FlashSparkPreemptionsRising",
    "FlashSparkDraftPositionStopped",
    "FlashSparkCanaryFailing",
}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed (Debian package prometheus; scripts/test.sh installs it)")
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


@pytest.mark.parametrize("profile", profile_names())
def test_every_profiles_rules_and_config_pass_promtool(tmp_path: Path, filled_env: Path, profile: str) -> None:
    # local-cpu is one node on this machine: the two-node cluster file is not for it
    recipe = resolve_recipe(config=None if profile == "local-cpu" else filled_env, profile=profile).recipe
    written = write_plan_files(render_plan(recipe), tmp_path, render_monitoring(recipe))
    folder = tmp_path / "monitoring"
    assert {p.name for p in written if p.parent == folder} == {"prometheus.yml", "rules.yml", "grafana-dashboard.json"}
    rules = promtool("check", "rules", "rules.yml", cwd=folder)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", "prometheus.yml", cwd=folder)
    assert config.returncode == 0, config.stdout + config.stderr
    names = {r.get("alert") for g in yaml.safe_load((folder / "rules.yml").read_text())["groups"] for r in g["rules"]}
    floor = recipe.acceptance_floor
    assert names >= ALERTS and ("FlashSparkAcceptanceBelowFloor" in names) is (floor is not None)


def test_promtool_rejects_a_broken_rule(tmp_path: Path, filled_env: Path) -> None:
    # the check above can fail: a rule with a bad expression does not pass
    rules = alert_rules(resolve_recipe(config=filled_env).recipe)
    rules["groups"][1]["rules"][0]["expr"] = "up{job= == 0"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", "rules.yml", cwd=tmp_path)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_the_floor_is_the_drafters_unless_the_profile_names_one(filled_env: Path) -> None:
    dspark = resolve_recipe(config=filled_env).recipe
    assert dspark.speculative.method == "dspark" and dspark.acceptance_floor == 0.30
    set_floor = resolve_recipe(config=filled_env, sets=["ACCEPTANCE_FLOOR=0.45"]).recipe
    expr = next(
        r["expr"]
        for r in alert_rules(set_floor)["groups"][1]["rules"]
        if r["alert"] == "FlashSparkAcceptanceBelowFloor"
    )
    assert expr == "flashspark:acceptance_rate:5m < 0.45"
    ngram = resolve_recipe(profile="local-cpu").recipe
    assert ngram.acceptance_floor is None  # ngram drafts only where the prompt repeats


def test_scrape_targets_are_what_the_head_reaches(filled_env: Path) -> None:
    recipe = resolve_recipe(
        config=filled_env,
        sets=["VLLM_HOST=0.0.0.0", "VLLM_PORT=8123", "EXPOSE_API=1", "watch.exporter_port=9999", "VLLM_API_KEY=sk-x"],
    ).recipe
    assert scrape_targets(recipe) == {"vllm": "127.0.0.1:8123", "flashspark": "127.0.0.1:9999"}
    files = render_monitoring(recipe).files()
    assert "sk-x" not in "".join(files.values())
    config = yaml.safe_load(files["prometheus.yml"])
    assert [c["static_configs"][0]["labels"]["deployment"] for c in config["scrape_configs"]] == [
        recipe.cluster.name
    ] * 2
    assert "&id" not in files["prometheus.yml"]  # plain YAML, no anchors for a person to untangle


def test_monitoring_compose_services_start_beside_the_head_on_loopback(tmp_path: Path, filled_env: Path) -> None:
    recipe = resolve_recipe(config=filled_env, sets=["MONITORING=1", "VLLM_API_KEY=sk-test"]).recipe
    plan = render_plan(recipe)
    written = [p for p in write_plan_files(plan, tmp_path) if p.name == "compose.yaml"]
    head_file = next(p for p in written if p.parent.name.startswith("rank0-"))
    worker_file = next(p for p in written if p.parent.name.startswith("rank1-"))
    result = compose_config(head_file)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == {"vllm", "prometheus", "grafana"}
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SERVER_HTTP_ADDR"] == "127.0.0.1" and grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert all(s["labels"]["io.flashspark.deployment"] == recipe.cluster.name for s in services.values())
    assert services["prometheus"]["labels"]["io.flashspark.role"] == "prometheus"
    configs = json.loads(result.stdout)["configs"]
    # the rules travel inside the compose file, and compose hands them over with `$` intact
    rules = yaml.safe_load(configs["prometheus_rules"]["content"].replace("$$", "$"))
    assert rules == alert_rules(recipe)
    assert "sk-test" not in head_file.read_text()
    assert set(json.loads(compose_config(worker_file).stdout)["services"]) == {"vllm"}


def test_the_dashboard_has_the_speculative_panels_first(filled_env: Path) -> None:
    dashboard = render_monitoring(resolve_recipe(config=filled_env).recipe).dashboard
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles[:3] == ["Acceptance rate (5m)", "Mean accepted length (5m)", "Acceptance by draft position (5m)"]
    recorded = {r["record"] for r in alert_rules(resolve_recipe(config=filled_env).recipe)["groups"][0]["rules"]}
    used = {t["expr"] for p in dashboard["panels"] for t in p["targets"] if t["expr"].startswith("flashspark:")}
    assert used <= recorded  # every recorded series a panel reads is recorded
    assert len({p["id"] for p in dashboard["panels"]}) == len(titles)


def test_each_alert_holds_for_its_own_time(filled_env: Path) -> None:
    recipe = resolve_recipe(config=filled_env).recipe
    held = {r["alert"]: r["for"] for r in alert_rules(recipe)["groups"][1]["rules"]}
    assert held["FlashSparkEngineDown"] == "1m" and held["FlashSparkCanaryFailing"] == "0m"  # the canary already waited
    assert held["FlashSparkKVCacheNearFull"] == "5m" and held["FlashSparkAcceptanceBelowFloor"] == "10m"
    shortened = {r["alert"]: r["for"] for r in alert_rules(recipe, hold="0s")["groups"][1]["rules"]}
    assert shortened["FlashSparkEngineDown"] == "0s" and shortened["FlashSparkPreemptionsRising"] == "0s"
