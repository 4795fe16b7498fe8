"""The one atomic write: a reader never sees half a file, whatever layer writes it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write via a temporary file in the same folder and rename it into place."""
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
    """`payload` as indented JSON, atomically (values JSON cannot hold are written as strings)."""
    write_atomic(path, json.dumps(payload, indent=2, default=str) + "\n", mode=mode)
