"""Host facts, the known-bad table and the boot log's backend lines (no nodes needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flashspark.bootlog import parse_boot_log
from flashspark.cluster.expectations import backend_mismatches
from flashspark.cluster.hostfacts import HostFacts, load_known_bad
from flashspark.cluster.preflight import host_checks
from flashspark.errors import InputError
from flashspark.recipe import resolve_recipe
from flashspark.recipe.model import BootExpectations, Recipe


def recipe(*sets: str) -> Recipe:
    return resolve_recipe(profile="agent-1m", sets=list(sets), strict=False).recipe


def facts(node: str, **values: object) -> HostFacts:
    base: dict[str, object] = {"kernel": "6.8.0-1010-nvidia", "interface": "enp1s0f0np0", "interface_present": True}
    base |= {"operstate": "up", "mtu": 9000}
    return HostFacts.model_validate({"node": node, **base, **values})


def failed(checks: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {f"{c.node}: {c.check}": f"{c.detail} | {c.fix}" for c in checks if not c.ok}


def test_the_shipped_table_names_the_7_0_0_1019_kernel_on_roce_only_with_its_source() -> None:
    table = load_known_bad()
    bad = facts("spark-2", kernel="7.0.0-1019-nvidia")
    assert [e.id for e in table if e.matches(bad, "roce")] == ["dgx-os-kernel-7.0.0-1019-roce-enomem"]
    assert not [e for e in table if e.matches(bad, "tcp")]
    assert not [e for e in table if e.matches(facts("spark-2", kernel="7.0.0-1018-nvidia"), "roce")]
    assert not [e for e in table if e.matches(facts("spark-2", kernel="7.0.0-10190"), "roce")]
    problems = failed(host_checks(recipe(), [facts("spark-1"), bad], table))
    assert list(problems) == ["spark-2: known-bad: dgx-os-kernel-7.0.0-1019-roce-enomem", "all nodes: same kernel"]
    detail = problems["spark-2: known-bad: dgx-os-kernel-7.0.0-1019-roce-enomem"]
    assert "kernel=7.0.0-1019-nvidia" in detail and "spark-vllm-docker/issues/392" in detail and "ENOMEM" in detail


def test_an_nccl_fact_from_the_fabric_matches_the_nccl_entry() -> None:
    table = load_known_bad()
    assert [e.id for e in table if e.matches(facts("s", nccl="2.28.9"), "roce")] == ["nccl-2.28.9-two-spark-hangs"]
    assert not [e for e in table if e.matches(facts("s", nccl="2.30.4"), "roce")]


def test_facts_that_differ_between_nodes_fail_by_name_and_equal_ones_pass() -> None:
    same = host_checks(recipe(), [facts("a", vllm="0.21.1"), facts("b", vllm="0.21.1")], [])
    assert not failed(same)
    differ = failed(host_checks(recipe(), [facts("a", mtu=9000, vllm="0.21.1"), facts("b", mtu=1500)], []))
    assert differ == {"all nodes: same mtu": "a=9000, b=1500 | " + differ["all nodes: same mtu"].split(" | ")[1]}


def test_a_missing_or_down_interface_names_the_node_interface_and_variables() -> None:
    problems = failed(
        host_checks(recipe(), [facts("a", interface="eth9", interface_present=False), facts("b", operstate="down")], [])
    )
    assert "eth9" in problems["a: fabric interface"] and "GLOO_SOCKET_IFNAME" in problems["a: fabric interface"]
    assert "down" in problems["b: fabric interface"] and "ip link set enp1s0f0np0 up" in problems["b: fabric interface"]
    assert not failed(host_checks(recipe(), [facts("a", operstate="unknown")], []))  # loopback-like links


def test_a_site_table_adds_entries_and_a_broken_one_is_an_input_error(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[[entry]]\nid = "lab-driver"\nwhen = { driver = "580.65*" }\neffect = "e"\nfix = "f"\nsource = "lab wiki"\n'
    )
    assert load_known_bad(site)[-1].id == "lab-driver"
    site.write_text('[[entry]]\nid = "x"\nwhen = { colour = "red" }\neffect = "e"\nfix = "f"\nsource = "s"\n')
    with pytest.raises(InputError, match="unknown host facts: colour"):
        load_known_bad(site)
    site.write_text('[[entry]]\nid = "x"\nwhen = { kernel = "7*" }\neffect = "e"\nfix = "f"\n')
    with pytest.raises(InputError, match="not readable"):
        load_known_bad(site)


# vLLM's own wording (model_executor/layers/fused_moe/oracle/mxfp4.py and unquantized.py, platforms/cuda.py).
FALLBACK_LOG = (
    "(EngineCore_DP0 pid=211) INFO 12-02 10:00:01 [mxfp4.py:499] Using 'DEEPGEMM_MXFP4' Mxfp4 MoE backend.\n"
    "(EngineCore_DP0 pid=211) INFO 12-02 10:00:02 [cuda.py:507] Using FLASHMLA_SPARSE attention backend out of "
    "potential backends: ['FLASHMLA_SPARSE'].\n"
)


def test_the_boot_log_backend_lines_are_parsed_and_a_fallback_is_a_mismatch_quoting_its_line() -> None:
    boot = parse_boot_log(FALLBACK_LOG)
    assert (boot.moe_backend, boot.attention_backend) == ("DEEPGEMM_MXFP4", "FLASHMLA_SPARSE")
    assert boot.moe_backend_line is not None
    assert boot.moe_backend_line.endswith("Using 'DEEPGEMM_MXFP4' Mxfp4 MoE backend.")
    [mismatch] = backend_mismatches(recipe().expect, boot)
    assert mismatch.expected == "B12X" and "DEEPGEMM_MXFP4" in mismatch.message and "[mxfp4.py:499]" in mismatch.message
    healthy = parse_boot_log(FALLBACK_LOG.replace("DEEPGEMM_MXFP4", "B12X"))
    assert backend_mismatches(recipe().expect, healthy) == []
    assert backend_mismatches(BootExpectations(moe_backend="b12x"), healthy) == []  # names compare without case
    [none] = backend_mismatches(BootExpectations(attention_backend="FLASH_ATTN"), parse_boot_log("no backend lines"))
    assert none.found is None and "names none" in none.message
    assert parse_boot_log("INFO Using TritonExperts MoE backend").moe_backend == "TritonExperts"
    # a log that holds two boots (a restart appends): the last one is the one serving
    twice = parse_boot_log(FALLBACK_LOG + FALLBACK_LOG.replace("DEEPGEMM_MXFP4", "B12X"))
    assert twice.moe_backend == "B12X" and "'B12X'" in (twice.moe_backend_line or "")
    assert parse_boot_log("INFO Using TRITON Unquantized MoE LoRA backend").moe_backend is None


def test_the_dspark_profiles_expect_b12x_and_the_expectation_can_be_dropped() -> None:
    assert recipe().expect.moe_backend == "B12X"
    assert resolve_recipe(profile="diag-262k-fp8", strict=False).recipe.expect.moe_backend == "B12X"
    assert resolve_recipe(profile="local-cpu", strict=False).recipe.expect.moe_backend is None
    assert recipe("EXPECT_MOE_BACKEND=none").expect.moe_backend is None


@pytest.mark.parametrize("ifname", ["eth0; touch {marker}", "$(touch {marker})", "`touch {marker}`"])
async def test_a_hostile_interface_name_reaches_the_probe_as_data(tmp_path: Path, ifname: str) -> None:
    from flashspark.cluster.hostfacts import read_host_facts
    from flashspark.cluster.transport import LocalTransport

    marker = tmp_path / "pwned"
    path = tmp_path / "solo.toml"
    path.write_text(
        'profile = "local-cpu"\n[[nodes]]\nname = "local"\nssh = "local"\n'
        f"socket_ifname = {json.dumps(ifname.format(marker=marker))}\n"
    )
    solo = resolve_recipe(config=path, strict=False).recipe
    found = await read_host_facts(solo, 0, LocalTransport())
    assert found.interface_present is False and found.kernel == os.uname().release
    assert not marker.exists()
