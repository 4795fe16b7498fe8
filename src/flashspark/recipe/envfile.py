"""A small dotenv reader that remembers the line each key came from.

It reads what `set -a; source .env.dspark` would for the files the recipe's
users write: `KEY=VALUE`, an optional `export`, single or double quotes,
`# comments` (whole-line, or after whitespace in an unquoted value) and
`${VAR}` / `${VAR:-default}` / `$VAR` expansion against earlier keys, then the
process environment. It is not a shell: command substitution is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flashspark.errors import RecipeError

_LINE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*)$")
_EXPAND = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# A cluster file is a few kilobytes. The bounds keep a wrong or hostile file from costing minutes
# or gigabytes before it is refused (tomllib is quadratic in a dotted key's length).
MAX_CONFIG_BYTES = 1 << 20
MAX_LINE_CHARS = 16 << 10


@dataclass(frozen=True)
class EnvEntry:
    key: str
    value: str
    line: int
    replaces_line: int | None = None  # an earlier line that set the same key (this one wins)


def parse_env_text(text: str, *, source: str, environ: Mapping[str, str] | None = None) -> dict[str, EnvEntry]:
    """Parse dotenv text into entries keyed by name; later lines win, as in a shell.

    Raises RecipeError naming the file and line for a line that is not KEY=VALUE.
    """
    environ = environ or {}
    entries: dict[str, EnvEntry] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(raw)
        if match is None:
            raise RecipeError(
                f"cannot read line {number} of {source}: expected KEY=VALUE",
                value=stripped,
                where=f"{source}:{number}",
                fix="write one KEY=VALUE per line; start comments with #",
            )
        key = match["key"]
        value, literal = _unquote(match["value"], where=f"{source}:{number}")
        if not literal:
            value = _expand(value, entries, environ, where=f"{source}:{number}")
        earlier = entries.pop(key, None)  # popped: the entry takes its place in line order
        entries[key] = EnvEntry(key=key, value=value, line=number, replaces_line=earlier.line if earlier else None)
    return entries


def read_config_text(path: Path) -> str:
    """A cluster file's text; RecipeError naming the file when it cannot be read, is not UTF-8 text,
    holds a NUL byte, or passes the size bounds."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise RecipeError(
            f"cannot read the config file {path}: {exc.strerror}",
            where=str(path),
            fix="check the path, or create one with `flashspark config init`",
        ) from exc
    # Size first: the read stops past the bound, possibly inside a multi-byte character.
    if len(data) > MAX_CONFIG_BYTES:
        raise RecipeError(
            f"the config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a cluster file",
            where=str(path),
            fix="point --env at the cluster file (.env.dspark or .toml); one is a few kilobytes",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"the config file {path} is not UTF-8 text (byte {exc.start} is not)",
            where=str(path),
            fix="point --env at the cluster file (.env.dspark or .toml), saved as UTF-8",
        ) from None
    for number, line in enumerate(text.split("\n"), start=1):
        if "\0" in line:
            raise RecipeError(
                f"line {number} of {path} holds a NUL byte",
                where=f"{path}:{number}",
                fix="remove it: no setting holds one (is this a binary file?)",
            )
        if len(line) > MAX_LINE_CHARS:
            raise RecipeError(
                f"line {number} of {path} is longer than {MAX_LINE_CHARS} characters",
                where=f"{path}:{number}",
                fix="split the value (a list can span lines in TOML); no setting needs a line this long",
            )
    return text


def read_env_file(path: Path, *, environ: Mapping[str, str] | None = None) -> dict[str, EnvEntry]:
    text = read_config_text(path)
    return parse_env_text(text, source=str(path), environ=environ)


def _unquote(value: str, *, where: str) -> tuple[str, bool]:
    """The value without its quotes, and whether it is literal (single quotes: no expansion, as in a shell)."""
    value = value.strip()
    if value[:1] in {"'", '"'}:
        quote = value[0]
        end = value.find(quote, 1)
        if end == -1:
            raise RecipeError(
                f"unterminated {quote} quote",
                value=value,
                where=where,
                fix=f"close the value with a matching {quote}",
            )
        rest = value[end + 1 :]
        # A shell glues `"8888"junk` into 8888junk; reading it as 8888 would hide the mistake.
        if rest.strip() and not re.match(r"\s+#", rest):
            raise RecipeError(
                f"text after the closing quote: {rest.strip()!r}",
                value=value,
                where=where,
                fix="put the whole value inside the quotes (a comment needs a space before its #)",
            )
        return value[1:end], quote == "'"
    # An unquoted value ends at a comment that follows whitespace.
    comment = re.search(r"\s#", value)
    if comment:
        value = value[: comment.start()]
    if "$(" in value or "`" in value:
        raise RecipeError(
            "command substitution is not supported in config files",
            value=value,
            where=where,
            fix="write the literal value",
        )
    return value.strip(), False


def _expand(value: str, entries: Mapping[str, EnvEntry], environ: Mapping[str, str], *, where: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        found = entries[name].value if name in entries else environ.get(name, "")
        if not found and match["default"] is not None:
            return match["default"]
        return found

    return _EXPAND.sub(substitute, value)


# --- what an env file can hold (the writers are in render/envfiles.py) -------------------------

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_UNCARRIABLE = {"\n": "a newline", "\r": "a carriage return", "\0": "a NUL character"}


def check_env_pair(name: str, value: str) -> None:
    """Raise RecipeError naming the variable when `name` or `value` cannot be written to an env file."""
    if not ENV_NAME.match(name):
        raise RecipeError(
            f"{name!r} is not a usable environment variable name",
            key=name,
            fix="use letters, digits and underscores, not starting with a digit",
        )
    for char, what in _UNCARRIABLE.items():
        if char in value:
            raise RecipeError(
                f"the value of {name} contains {what}, which no env file can carry",
                key=name,
                fix="remove it from the value (a key or a token never holds one)",
            )
