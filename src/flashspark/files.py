"""The one file writer: atomic (a reader never sees half a file) and redacted (no registered secret,
no URL password, reaches a file FlashSpark writes, whatever layer writes it).

The owner-only env files that carry secrets to the engine are the one exception; they are written
on the nodes by the runtimes (`cluster/runtimes.py`), never through here.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO, TypeVar

from pydantic import BaseModel, ValidationError

from flashspark.errors import InputError, first_invalid
from flashspark.redact import redact_data, redact_exact

M = TypeVar("M", bound=BaseModel)


def write_atomic(path: Path, text: str, *, mode: int = 0o644, redacted: bool = False) -> None:
    """Write via a temporary file in the same folder and rename it into place, registered secrets masked
    (`redacted`: the caller already masked them where they can be, as `write_json` does inside strings)."""
    if not redacted:
        text = redact_exact(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: Any, *, mode: int = 0o644) -> None:
    """`payload` as indented JSON, atomically, secrets masked by key name and by shape
    (values JSON cannot hold are written as strings)."""
    # Masked inside the data, not in the text: a registered value that happens to be a number or
    # `true` must not turn into a bare *** that no JSON reader accepts.
    write_atomic(path, json.dumps(redact_data(payload), indent=2, default=str) + "\n", mode=mode, redacted=True)


def append_line(handle: TextIO, line: str) -> None:
    """Append one line (JSONL evidence, a journal) to an open file, registered secrets and URL
    passwords masked. Cheap enough for a benchmark's event loop: no name-shaped nets run here."""
    handle.write(redact_exact(line) + "\n")


def append_event(path: Path, event: str, **details: Any) -> dict[str, Any]:
    """Append one `{"t", "event", ...details}` line to a JSONL journal, the file opened and closed around
    it (a crash keeps every line written before it); return the entry."""
    entry = {"t": round(time.time(), 3), "event": event, **details}
    with open(path, "a", encoding="utf-8") as handle:
        append_line(handle, json.dumps(entry))
    return entry


def read_model(path: Path, model: type[M], *, what: str, fix: str, key: str | None = None) -> M:
    """The JSON document at `path` as `model`; an InputError naming the file, the first problem and the
    fix when it cannot be read or is not one (a torn, hand-edited or foreign file is input, not a crash)."""
    try:
        return model.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", key=key, where=str(path), fix=fix) from None
    except ValidationError as exc:
        problem, message = first_invalid(exc, top="the document")
        raise InputError(f"{path} is not {what} ({problem}: {message})", key=key, where=str(path), fix=fix) from None
