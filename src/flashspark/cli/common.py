"""What every command shares, declared once: error handling, the recipe options, the target options,
the --json flag, and the one way a command ends (data out, exit code).

Importing this module stays cheap (click and the light option models only): `flashspark --help`
and tab completion load every command module, so the library is imported inside the commands.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

from flashspark.cli import exit_codes
from flashspark.errors import FlashsparkError, InputError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flashspark.client.schema import Timeouts
    from flashspark.cluster.targets import Target
    from flashspark.recipe import ResolvedRecipe

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_CONFIG_NAMES = (".env.dspark", "flashspark.toml")
LOCAL_PROFILE = "local-cpu"


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn FlashsparkErrors into a readable message (or JSON) and the mapped exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from flashspark.cli import console

        try:
            return func(*args, **kwargs)
        except FlashsparkError as error:
            if kwargs.get("as_json"):
                console.print_json(console.error_payload(error))
            else:
                console.print_error(error)
            sys.exit(exit_codes.exit_code_for(error))
        except KeyboardInterrupt:
            console.print_plain("interrupted", err=True)
            sys.exit(exit_codes.INTERRUPTED)

    return wrapper


def apply(options: list[Callable[[Callable[P, R]], Callable[P, R]]]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """One decorator from a list of click options, in the order they are listed."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


recipe_options = apply(
    [
        click.option(
            "--env",
            "--config",
            "config",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="Cluster file: .env.dspark style or .toml. Default: ./.env.dspark or "
            "./flashspark.toml when present, or $FLASHSPARK_CONFIG.",
        ),
        click.option("--profile", default=None, help="Serving profile (see `flashspark profiles`)."),
        click.option(
            "--set",
            "sets",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override one setting (MAX_NUM_SEQS=4 or engine.max_num_seqs=4). Repeatable.",
        ),
    ]
)

# (flag, Timeouts field, what it bounds): every command that talks to a server takes these.
TIMEOUT_FLAGS = (
    ("--connect-timeout", "connect_s", "Seconds to open a connection"),
    ("--first-byte-timeout", "first_byte_s", "Seconds to the first byte of a reply (prefill included)"),
    ("--stall-timeout", "stall_s", "Longest silence inside a streamed reply, in seconds"),
    ("--request-timeout", "total_s", "Seconds one request may take in all"),
)


def timeout_options(*, probe: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The four timeouts, which the command receives as one `timeouts` dict (checked later, by
    `timeouts_from`: this wrapper runs outside `handle_errors`). `probe`: the command only asks a
    server how it is (status, capture), with the short probe budgets as defaults."""
    from flashspark.client.schema import PROBE_TIMEOUTS, Timeouts

    defaults = PROBE_TIMEOUTS if probe else Timeouts()

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            kwargs["timeouts"] = {field: kwargs.pop(field) for _, field, _ in TIMEOUT_FLAGS}
            return func(*args, **kwargs)

        options = [
            click.option(
                flag,
                field,
                type=float,
                default=None,
                metavar="SECONDS",
                help=f"{what} (default {getattr(defaults, field):g}).",
            )
            for flag, field, what in TIMEOUT_FLAGS
        ]
        return apply(options)(wrapper)  # type: ignore[arg-type]

    return decorate


def target_options(func: Callable[P, R]) -> Callable[P, R]:
    """--base-url, --model and the timeouts: every command that sends requests to a server."""
    func = timeout_options()(func)
    func = click.option("--model", default=None, help="Model id to request (default: the first the server lists).")(
        func
    )
    return click.option("--base-url", default=None, help="Any OpenAI-compatible server (default: the deployment).")(
        func
    )


def timeouts_from(chosen: dict[str, float | None], *, probe: bool = False) -> Timeouts:
    """The client's Timeouts from the flags given (None: the default, a probe's with `probe`); a bad
    value names its flag."""
    from pydantic import ValidationError

    from flashspark.client.schema import PROBE_TIMEOUTS, Timeouts

    given = {field: value for field, value in chosen.items() if value is not None}
    base = PROBE_TIMEOUTS.model_dump() if probe else {}
    try:
        return Timeouts(**{**base, **given})
    except ValidationError as error:
        detail = error.errors()[0]
        field = str(detail["loc"][0])
        flag = next(f for f, name, _ in TIMEOUT_FLAGS if name == field)
        raise InputError(
            f"{flag} {detail['msg'].lower()}",
            key=flag,
            value=str(given.get(field)),
            fix="give a positive number of seconds",
        ) from None


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def out_option(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    return click.option(
        "--out",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help=f"Folder for {what} (default: a new run directory under FLASHSPARK_HOME/runs).",
    )


def find_config(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    from_env = os.environ.get("FLASHSPARK_CONFIG")
    if from_env:
        return Path(from_env)
    for name in DEFAULT_CONFIG_NAMES:
        if Path(name).is_file():
            return Path(name)
    return None


def load_recipe(
    config: Path | None, profile: str | None, sets: tuple[str, ...], *, strict: bool = True, local: bool = False
) -> ResolvedRecipe:
    """The resolved recipe; with no profile and no cluster file, `local` (or its absence) picks local-cpu."""
    from flashspark.recipe import resolve_recipe

    found = find_config(config)
    if local and profile is None and found is None:
        profile = LOCAL_PROFILE
    return resolve_recipe(profile=profile, config=found, sets=sets, strict=strict)


def deployment_recipe(config: Path | None, profile: str | None, sets: tuple[str, ...]) -> ResolvedRecipe:
    """The recipe of the deployment a lifecycle command acts on: the cluster file's, else the embedded default's."""
    return load_recipe(config, profile, sets, local=True)


def resolve_target(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    timeouts: dict[str, float | None],
) -> tuple[Target, ResolvedRecipe]:
    """The server a gate or a bench talks to (see `cluster.targets`), with the timeouts chosen."""
    from flashspark.cluster.targets import resolve_target as resolve

    budgets = timeouts_from(timeouts)
    resolved = deployment_recipe(config, profile, sets)
    explicit = profile is not None or config is not None or bool(sets)
    target = resolve(resolved.recipe, base_url=base_url, explicit_recipe=explicit, timeouts=budgets)
    return target, resolved


def resolve_run(
    config: Path | None,
    profile: str | None,
    sets: tuple[str, ...],
    base_url: str | None,
    timeouts: dict[str, float | None],
    out: Path | None,
    kind: str,
) -> tuple[Target, Path]:
    """The server a gate or bench talks to and the folder its evidence goes to (`out`, else a new run
    directory named after `kind`)."""
    from flashspark.cluster.lifecycle import new_run_dir

    target, resolved = resolve_target(config, profile, sets, base_url, timeouts)
    return target, out or new_run_dir(resolved.recipe, kind)


def parse_number_list(
    text: str, *, option: str, kind: type[int] | type[float] = int, minimum: float = 1, example: str = "1,2,4,6"
) -> tuple[Any, ...]:
    """A comma list of finite numbers of `kind`, each at least `minimum` (a bad one names the option)."""
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(not math.isfinite(v) or v < minimum for v in values):
        what = "whole numbers" if kind is int else "numbers"
        raise InputError(
            f"{text!r} is not a comma list of {what} of at least {minimum:g}",
            key=option,
            value=text,
            fix=f"write e.g. {example}",
        )
    return values


def parse_levels(text: str) -> tuple[int, ...]:
    return parse_number_list(text, option="--concurrency")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    from flashspark.cli import aio

    return aio.run(coroutine)


def run_until_signalled(coroutine: Coroutine[Any, Any, T]) -> T:
    """`run` for commands that start engines: Ctrl-C, SIGTERM (systemd, `timeout`, a CI runner) and a
    hung-up terminal all cancel the coroutine, so what it started is stopped as the cancellation unwinds
    (an `up` cut short stops its engines) and it ends as an interruption (exit 130). Ctrl-C counts even
    when this process started with SIGINT ignored, as a background job does, where Python itself would
    install no handler and the signal would be lost."""

    async def cancellable() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, task.cancel)
        return await coroutine

    try:
        return run(cancellable())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def finish(report: BaseModel, as_json: bool, show: Callable[[], None], *, ok: bool = True, fail_code: int = 4) -> None:
    """Print a report as JSON (data, stdout) or for people; exit with fail_code when it did not pass."""
    from flashspark.cli import console

    if as_json:
        console.print_model(report)
    else:
        show()
    if not ok:
        sys.exit(fail_code)


def fail(code: int) -> NoReturn:
    sys.exit(code)


def stop_on_signals() -> asyncio.Event:
    """An event Ctrl-C and SIGTERM set, for commands whose ordinary end is a signal (record, monitor,
    watch, soak): they stop cleanly and keep what they have. Call it inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def key_from_env(key_env: str | None) -> str | None:
    """The listener key named by `--key-env NAME`: the variable's value, which must be set."""
    if key_env is None:
        return None
    key = os.environ.get(key_env)
    if not key:
        raise InputError(f"{key_env} is not set", key="--key-env", fix=f"export {key_env}=... first")
    return key
