"""The workload file: what it accepts, and how it refuses bad or hostile input (key, file, fix)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashspark.errors import InputError
from flashspark.recipe.workload import MAX_CANDIDATES, load_workload


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "workload.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_full_declaration_reads_with_its_grid(tmp_path: Path) -> None:
    workload = load_workload(
        write(
            tmp_path,
            """
name = "chat-8"
[traffic]
shape = "rate"
rate = 2.5
requests = 40
concurrency = 8
input_tokens = 256
output_tokens = 64
[objective]
optimise = "p95_ttft_s"
max_p95_ttft_s = 2.0
[search]
max_num_seqs = [4, 8]
num_speculative_tokens = [3, 5]
[tune]
rounds = 4
""",
        )
    )
    assert workload.traffic.in_flight == 8
    assert workload.traffic.tokens_per_request == 320
    assert workload.objective.direction == "min"
    assert workload.search.grid() == [
        {"max_num_seqs": 4, "num_speculative_tokens": 3},
        {"max_num_seqs": 4, "num_speculative_tokens": 5},
        {"max_num_seqs": 8, "num_speculative_tokens": 3},
        {"max_num_seqs": 8, "num_speculative_tokens": 5},
    ]


def test_a_rate_shape_keeps_no_more_in_flight_than_it_sends(tmp_path: Path) -> None:
    text = '[traffic]\nshape = "rate"\nrate = 1.0\nrequests = 3\nconcurrency = 8\n'
    assert load_workload(write(tmp_path, text)).traffic.in_flight == 3


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[traffic]\nconcurency = 4\n", "traffic.concurency"),  # a typo is not ignored
        ("[traffic]\nconcurrency = 0\n", "traffic.concurrency"),
        ("[traffic]\nconcurrency = '4'\n", "traffic.concurrency"),  # no string coerced to a number
        ("[traffic]\nconcurrency = true\n", "traffic.concurrency"),
        ("[traffic]\ninput_tokens = 99999999999\n", "traffic.input_tokens"),
        ('[traffic]\nshape = "rate"\n', "traffic"),  # a rate shape without a rate
        ("[traffic]\nrate = 2.0\n", "traffic"),  # a rate on a static shape
        ('[objective]\noptimise = "vibes"\n', "objective.optimise"),
        ("[objective]\nmax_p95_ttft_s = -1\n", "objective.max_p95_ttft_s"),
        ("[search]\nmax_num_seqs = [4, 4]\n", "search"),
        ("[search]\nmax_num_seqs = [0]\n", "search"),
        ("[search]\ngpu_memory_utilization = [1.5]\n", "search"),
        ("[search]\nenforce_eager = [true]\n", "search.enforce_eager"),  # only the declared knobs
        ("[tune]\nrounds = 1\n", "tune.rounds"),  # one round has no spread
        ('name = "../../etc/passwd"\n', "name"),
        ('name = "a\\nb"\n', "name"),
        ('name = "$(reboot)"\n', "name"),
        ("schema_version = 2\n", "schema_version"),
    ],
)
def test_bad_values_name_their_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_workload(path)
    assert caught.value.key == key
    assert caught.value.where == str(path)
    assert caught.value.fix


def test_the_grid_is_bounded_before_anything_boots(tmp_path: Path) -> None:
    at_most = write(
        tmp_path, "[search]\nmax_num_seqs = [1,2,3,4,5,6,7,8]\nnum_speculative_tokens = [1,2,3,4,5,6,7,8]\n"
    )
    assert len(load_workload(at_most).search.grid()) == MAX_CANDIDATES
    over = write(tmp_path, "[search]\nmax_num_seqs = [1,2,3,4,5,6,7,8,9]\nnum_speculative_tokens = [1,2,3,4,5,6,7,8]\n")
    with pytest.raises(InputError, match=r"^\(top level\): the search declares 72 combinations; at most 64"):
        load_workload(over)


@pytest.mark.parametrize("text", ["[traffic\n", "\x00\x01", "name = "])
def test_a_file_that_is_not_toml_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(InputError, match="not TOML"):
        load_workload(write(tmp_path, text))


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_bytes(b"\xff\xfe name")
    with pytest.raises(InputError, match="cannot read"):
        load_workload(path)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "examples" / "tune").glob("*.toml")))
def test_the_shipped_examples_read(path: Path) -> None:
    assert load_workload(path).search.grid()
