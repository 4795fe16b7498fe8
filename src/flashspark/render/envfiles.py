"""One writer per reader: env files for POSIX `sh` (sourced by the process runtime, and command.sh)
and for compose's `env_file`, and comment lines that nothing can break out of.

Each writer carries any value exactly (quotes, `$`, `#`, backslashes, spaces, any Unicode) or
refuses it: a newline, a carriage return or a NUL cannot be carried by either reader (compose's
parser ends a value at a newline; an environment variable cannot hold a NUL). Names must be
identifiers, the only names both readers and every shell accept.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from flashspark.recipe.envfile import check_env_pair


def posix_env_file(values: Mapping[str, str]) -> str:
    """`export NAME='value'` lines a POSIX shell sources back to exactly these values."""
    lines = []
    for name, value in sorted(values.items()):
        check_env_pair(name, value)
        lines.append(f"export {name}={shlex.quote(value)}\n")
    return "".join(lines)


def compose_value(value: str) -> str:
    """`value` quoted for compose's env_file parser (compose-go dotenv).

    Single quotes are literal there (no `$` interpolation, no `#` comment, no escapes); they
    cannot hold a `'` or end in a backslash (the parser reads `\\'` as an escaped quote), so such
    a value is double-quoted instead, with `\\`, `"` and `$` escaped.
    """
    if "'" not in value and not value.endswith("\\"):
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def compose_env_file(values: Mapping[str, str]) -> str:
    """`NAME='value'` lines compose's env_file reads back to exactly these values."""
    lines = []
    for name, value in sorted(values.items()):
        check_env_pair(name, value)
        lines.append(f"{name}={compose_value(value)}\n")
    return "".join(lines)


def comment_line(text: str) -> str:
    """`# text` as one line, whatever `text` holds: control characters are shown escaped, never written."""
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return f"# {shown}"
