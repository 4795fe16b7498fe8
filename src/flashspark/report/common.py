"""What every report shares: how a number is written in a table, and how a figure is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: an en dash for a missing number, thousands separated, floats to `digits`."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def one_line(text: str, limit: int = 70, *, table: bool = True) -> str:
    """Free text (an answer, a detail) on one line, cut to `limit`; in a table cell, pipes escaped."""
    flat = " ".join(text.split())
    flat = flat.replace("|", "\\|") if table else flat
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def save_figure(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
