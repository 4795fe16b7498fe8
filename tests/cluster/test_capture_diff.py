"""`capture --diff`: what changed between two evidence bundles (files, text, metric counters)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flashspark.cli.main import main
from flashspark.cluster.observe import diff_captures
from flashspark.errors import InputError


def bundle(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    index = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in files.items()}
    (root / "capture.json").write_text(json.dumps({"schema_version": 1, "files": index}))
    return root


METRICS = """# TYPE vllm:spec_decode_num_drafts counter
vllm:spec_decode_num_drafts_total{{model_name="m"}} {drafts}
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{{model_name="m"}} 100.0
"""


def test_changed_added_removed_files_and_counter_deltas(tmp_path: Path) -> None:
    a = bundle(
        tmp_path / "a",
        {"node1/host.txt": "node1\nup 1 day\n", "node2/log.tail": "x\n", "api/metrics.txt": METRICS.format(drafts=10)},
    )
    b = bundle(
        tmp_path / "b",
        {
            "node1/host.txt": "node1\nup 2 days\n",
            "node1/nvidia-smi.txt": "GPU 0\n",
            "api/metrics.txt": METRICS.format(drafts=25),
        },
    )
    report = diff_captures(a, b)
    assert report.only_in_a == ["node2/log.tail"] and report.only_in_b == ["node1/nvidia-smi.txt"]
    assert report.changed == ["api/metrics.txt", "node1/host.txt"]
    assert "-up 1 day" in report.diffs["node1/host.txt"] and "+up 2 days" in report.diffs["node1/host.txt"]
    assert report.counter_deltas == {"vllm:spec_decode_num_drafts": 15.0}


def test_a_folder_that_is_not_a_capture_is_a_usage_error(tmp_path: Path) -> None:
    good = bundle(tmp_path / "good", {"api/api.json": "{}"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a FlashSpark capture"):
        diff_captures(good, tmp_path / "empty")
    result = CliRunner().invoke(main, ["capture", "--diff", str(good), str(tmp_path / "empty")])
    assert result.exit_code == 2 and "not a FlashSpark capture" in result.output


def test_identical_captures_say_so(tmp_path: Path) -> None:
    files = {"node1/host.txt": "node1\n"}
    result = CliRunner().invoke(
        main, ["capture", "--diff", str(bundle(tmp_path / "a", files)), str(bundle(tmp_path / "b", files))]
    )
    assert result.exit_code == 0 and "identical" in result.output
