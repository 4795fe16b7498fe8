"""`flashspark report` on the gates' runs: the tool-call cases and the long-decode windows, from the JSON
the gates wrote (stand-in answers with a known verdict, so every cell of the table is known)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from flashspark.client import OpenAIClient
from flashspark.gates.longdecode import run_longdecode
from flashspark.gates.tools import run_tools
from flashspark.report import write_run_report
from tests.gates.test_longdecode import WINDOW, clean_tokens, garbled_after, long_reply
from tests.gates.test_tools_gate import PARIS, good_answer, text_stream, tool_stream
from tests.standin import StandIn

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")


async def test_the_longdecode_report_names_each_streams_first_bad_window_and_draws_them(tmp_path: Path) -> None:
    with StandIn() as server:
        server.queue(long_reply(garbled_after(200, 512)), long_reply(clean_tokens(512)))
        async with OpenAIClient(server.url) as client:
            await run_longdecode(
                client, tokens=512, concurrency=2, window_tokens=WINDOW, report_path=tmp_path / "longdecode.json"
            )
    written = write_run_report(tmp_path)
    assert written == [tmp_path / "report.md", tmp_path / "longdecode.png"]
    text = (tmp_path / "report.md").read_text()
    rows = {
        line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")
    }
    bad, clean = sorted(rows.values(), key=lambda row: "**no**" not in row)
    assert "| 192-256 | " in bad and "special_token_leak" in bad and "| 5 |" in bad  # windows 3..7 of 8 are bad
    assert "| yes | 512 | 8 | – | – | 0 |" in clean
    assert text.startswith("# Long-decode gate:") and "FAIL" in text.splitlines()[0]
    assert "<|im_start|>" in text  # the sample of the first bad window, quoted
    assert (tmp_path / "longdecode.png").stat().st_size > 5_000


async def test_the_tools_report_tables_every_case_and_says_why_a_check_failed(tmp_path: Path) -> None:
    def answer(request: dict) -> object:
        if request.get("parallel_tool_calls"):
            return tool_stream([("get_weather", PARIS)])  # one call of two
        if request.get("tool_choice") == "required":
            return tool_stream([("get_weather", '{"city": "Paris", "unit": "kelvin"}')])  # not in the enum
        if request["messages"][-1]["role"] == "tool":
            return good_answer("followup")
        if isinstance(request.get("tool_choice"), dict):
            return good_answer("named")
        return text_stream("I think it is sunny.")

    with StandIn() as server:
        server.responder = answer  # type: ignore[assignment]
        async with OpenAIClient(server.url) as client:
            await run_tools(client, expected=("required", "named"), report_path=tmp_path / "tools.json")
    write_run_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| required | yes | **FAIL** | arguments_schema |" in text
    assert "| parallel | no | fail (not expected) | tool_calls |" in text
    assert "| named | yes | pass | – |" in text
    assert "- `required` arguments_schema:" in text and "kelvin" in text
    assert text.startswith("# Tool-call gate: standin — FAIL")
    assert json.loads((tmp_path / "tools.json").read_text())["ok"] is False


def test_the_cli_tools_command_writes_tools_json_for_the_report(tmp_path: Path) -> None:
    with StandIn() as server:
        server.responder = lambda request: good_answer("named")  # type: ignore[assignment]
        env = {"FLASHSPARK_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
        run = subprocess.run(
            [FLASHSPARK, "tools", "--base-url", server.url, "--case", "named", "--out", str(tmp_path / "t")],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"report: flashspark report {tmp_path / 't'}" in run.stdout
    report = subprocess.run([FLASHSPARK, "report", str(tmp_path / "t")], capture_output=True, text=True, check=False)
    assert report.returncode == 0 and "| named | yes | pass |" in (tmp_path / "t" / "report.md").read_text()
