"""The redactor runs on every file FlashSpark writes and on everything it prints: registered secrets
(the recipe's, the client's key) and URL passwords never reach a run directory or a terminal, even
when a server echoes them back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from flashspark import files
from flashspark.redact import MASK, add_masks
from tests.standin import StandIn, stream_reply

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
KEY = "sk-echoed-secret-4711"
PASSWORD = "pw-hunter22"


def every_file(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def flashspark(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "VLLM_API_KEY": KEY}
    return subprocess.run([FLASHSPARK, *args], capture_output=True, text=True, timeout=120, env=environ)


def test_a_server_that_echoes_the_key_leaves_no_copy_in_any_file_or_output(tmp_path: Path) -> None:
    with StandIn() as server:
        # A broken proxy or a hostile server echoing the key in its replies and in an error.
        server.default = stream_reply([(0.0, f"Bearer {KEY} ok {KEY}")], completion_tokens=4)
        url = server.url.replace("http://", f"http://user:{PASSWORD}@")
        sanity = flashspark("sanity", "--base-url", url, "--concurrency", "1", "--out", str(tmp_path / "sanity"))
        bench = flashspark(
            "bench", "static", "--base-url", url, "--concurrency", "1", "--warmup", "0", "--out", str(tmp_path / "b")
        )
        report = flashspark("report", str(tmp_path / "b"))
    written = {**every_file(tmp_path / "sanity"), **every_file(tmp_path / "b")}
    assert {"sanity.jsonl", "requests.jsonl", "results.json", "summary.csv", "report.md"} <= set(written)
    for name, data in written.items():
        assert KEY.encode() not in data and PASSWORD.encode() not in data, name
    for done in (sanity, bench, report):
        assert KEY not in done.stdout + done.stderr and PASSWORD not in done.stdout + done.stderr
    # The echo was there and was masked, not merely absent.
    assert f"ok {MASK}".encode() in written["sanity.jsonl"]
    assert json.loads(written["results.json"])["base_url"].startswith(f"http://user:{MASK}@")


def test_the_file_writers_mask_registered_values_secret_named_keys_and_url_passwords(tmp_path: Path) -> None:
    add_masks(["hf_registered_value_0001", "abc"])  # "abc" is too short to mask safely: kept
    files.write_atomic(tmp_path / "a.txt", "token hf_registered_value_0001 abc\n")
    files.write_json(
        tmp_path / "b.json",
        {"HF_TOKEN": "anything-at-all", "max_num_batched_tokens": 8192, "url": "https://u:p4ss@h/x", "n": None},
    )
    with (tmp_path / "c.jsonl").open("w") as handle:
        files.append_line(handle, '{"error": "hf_registered_value_0001 at http://me:p4ss@h"}')
    assert (tmp_path / "a.txt").read_text() == f"token {MASK} abc\n"
    assert json.loads((tmp_path / "b.json").read_text()) == {
        "HF_TOKEN": MASK,
        "max_num_batched_tokens": 8192,
        "url": f"https://u:{MASK}@h/x",
        "n": None,
    }
    assert json.loads((tmp_path / "c.jsonl").read_text()) == {"error": f"{MASK} at http://me:{MASK}@h"}


def test_an_error_naming_a_url_with_a_password_prints_it_masked() -> None:
    for extra in ((), ("--json",)):
        done = flashspark("smoke", "--base-url", f"http://user:{PASSWORD}@127.0.0.1:9/v1", *extra)
        assert done.returncode == 4
        assert PASSWORD not in done.stdout + done.stderr
        assert f"user:{MASK}@127.0.0.1:9" in done.stdout + done.stderr


def test_a_registered_value_that_is_also_a_number_never_breaks_the_json_written(tmp_path: Path) -> None:
    add_masks(["8192"])  # a (weak) key that equals a number the data holds
    files.write_json(tmp_path / "r.json", {"max_model_len": 8192, "note": "sent 8192", "key": "VLLM_API_KEY"})
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "max_model_len": 8192,
        "note": f"sent {MASK}",
        "key": "VLLM_API_KEY",  # a bare `key` names a setting, it is not one
    }
