"""Fuzzing the inputs a user controls: 640 generated cluster files and CLI argument sets.

Every run must end in exit 0 (usable) or exit 2 (named error), never a traceback (exit 1) and never
a hang (an alarm fails the run after HANG_S). Files and argument sets carrying a mistake planted
from a list of known-bad settings must be exit 2 — the oracle is that list, not the code under test.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from click.testing import CliRunner, Result
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flashspark.cli.main import main
from flashspark.recipe import keys

HANG_S = 20
FUZZ = settings(max_examples=160, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# Settings that are wrong whatever else the file says (each one refused by a rule or a type).
KNOWN_BAD = [
    "MAX_NUM_SEQS=0",
    "MAX_NUM_SEQS=-1",
    "MAX_NUM_BATCHED_TOKENS=-8",
    "VLLM_PORT=70000",
    'VLLM_PORT="8888"junk',
    "VLLM_PORT=eighty",
    "WORKER_SSH_PORT=0",
    "HEAD_NAME=../../tmp/x",
    "DEPLOYMENT_NAME=a/b",
    "DEPLOYMENT_NAME=$(touch /tmp/p)",
    "MTP_NUM_TOKENS=-3",
    "GPU_MEMORY_UTILIZATION=1.5",
    "WORKER99999999_HOST=x",
    "PROFILE=../../x",
    "VLLM_HOST=0.0.0.0",
    'HF_TOKEN="unterminated',
    "BLOCK_SIZE=abc",
]
# On a command line a value is taken as written: an unmatched quote is part of a (valid) token there.
KNOWN_BAD_SET = [bad for bad in KNOWN_BAD if not bad.startswith("HF_TOKEN")]
KNOWN_KEYS = sorted(set(keys.SCALAR_KEYS) | set(keys.HEAD_KEYS) | {f"WORKER_{f}" for f in keys.NODE_FIELDS})
TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r\x00"), max_size=40)
VALUES = st.one_of(
    TEXT,
    st.integers(-(2**40), 2**40).map(str),
    st.sampled_from(["", "0", "1", "true", "auto", "local", "127.0.0.1", "'q'", '"q"', "$X", "${X:-y}", "a #b"]),
)
ENV_LINES = st.one_of(
    st.tuples(st.sampled_from(KNOWN_KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    TEXT,
    st.sampled_from(["# comment", "", "export MAX_NUM_SEQS=4", "   "]),
)


@contextmanager
def no_hang() -> Iterator[None]:
    def alarm(*_: object) -> None:
        raise TimeoutError(f"no answer within {HANG_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(args: list[str]) -> Result:
    with no_hang():
        result = CliRunner().invoke(main, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback for {args!r}") from result.exception
    assert result.exit_code in {0, 2}, (args, result.exit_code, result.stderr[-400:])
    if result.exit_code == 2:
        assert result.stderr.strip() or result.stdout.strip(), args  # an exit 2 always says why
    event(f"exit {result.exit_code}")  # --hypothesis-show-statistics: both outcomes must occur
    return result


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    return repr(value)


SECTIONS = ["profile", "cluster", "model", "api", "engine", "speculative", "parallel", "lifecycle", "env", "nodes"]
FIELDS = ["name", "max_num_seqs", "port", "host", "ssh", "image", "runtime", "api_key", "extra_args", "x", "cpu"]
LEAVES = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), TEXT, st.lists(TEXT, max_size=3)
)
TABLES = st.dictionaries(
    st.sampled_from([*SECTIONS, "junk"]),
    st.one_of(
        LEAVES,
        st.dictionaries(st.sampled_from(FIELDS), st.one_of(LEAVES, st.dictionaries(TEXT, LEAVES, max_size=2))),
        st.lists(st.dictionaries(st.sampled_from(FIELDS), LEAVES, max_size=3), max_size=3),
    ),
    max_size=5,
)


@FUZZ
@given(
    local=st.booleans(),
    lines=st.lists(ENV_LINES, max_size=12),
    bad=st.one_of(st.none(), st.sampled_from(KNOWN_BAD)),
)
def test_fuzzed_env_files(tmp_path_factory: Any, local: bool, lines: list[str], bad: str | None) -> None:
    path = tmp_path_factory.mktemp("fuzz") / ".env.dspark"
    # Half start from the embedded default, so that usable files (exit 0) are in the mix too.
    body = (["PROFILE=local-cpu"] if local else []) + lines + ([bad] if bad else [])
    path.write_text("\n".join(body) + "\n", encoding="utf-8")
    result = invoke(["config", "check", "--env", str(path)])
    if bad is not None:
        assert result.exit_code == 2, (bad, result.stderr[-400:])


@FUZZ
@given(local=st.booleans(), tree=TABLES)
def test_fuzzed_toml_files(tmp_path_factory: Any, local: bool, tree: dict[str, Any]) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "flashspark.toml"
    if local and "profile" not in tree:
        tree = {"profile": "local-cpu", **tree}
    path.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in tree.items()), encoding="utf-8")
    invoke(["config", "check", "--env", str(path)])


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.binary(max_size=300))
def test_fuzzed_bytes_as_a_cluster_file(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "cluster.env"
    path.write_bytes(data)
    invoke(["config", "check", "--env", str(path)])


COMMANDS = [
    ["config", "check"],
    ["config", "render", "--out", "OUT"],
    ["plan"],
    ["plan", "--hf-config", "nope.json"],
    ["profiles"],
]
FLAGS = st.one_of(
    st.tuples(st.just("--set"), st.tuples(st.sampled_from(KNOWN_KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")),
    st.tuples(st.just("--set"), st.from_regex(r"[a-z_.0-9]{1,20}=[^\n\x00]{0,10}", fullmatch=True)),
    st.tuples(st.just("--set"), TEXT),
    st.tuples(st.just("--profile"), st.one_of(st.sampled_from(["local-cpu", "agent-1m", "../x", "[/x]"]), TEXT)),
    st.tuples(st.sampled_from(["--concurrency", "--max-seqs", "--context", "--json"]), TEXT),
    st.tuples(st.just("--json")),
)


@settings(max_examples=240, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    command=st.sampled_from(COMMANDS),
    flags=st.lists(FLAGS, max_size=5),
    bad=st.one_of(st.none(), st.sampled_from(KNOWN_BAD_SET)),
)
def test_fuzzed_command_lines(
    tmp_path_factory: Any, command: list[str], flags: list[tuple[str, ...]], bad: str | None
) -> None:
    out = str(tmp_path_factory.mktemp("out") / "plan")
    args = [out if part == "OUT" else part for part in command]
    args += [part for flag in flags for part in flag if "\x00" not in part]
    if bad is not None and command[0] == "config":
        # A bad setting given last wins over anything the random flags set.
        args += ["--profile", "local-cpu", "--set", bad] if not bad.startswith("PROFILE") else ["--set", bad]
    result = invoke(args)
    if bad is not None and command[0] == "config":
        assert result.exit_code == 2, (args, result.stderr[-400:])
