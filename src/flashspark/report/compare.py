"""`flashspark compare A B`: per-cell aggregate throughput of run B against run A, with the noise named."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from flashspark.bench.results import read_results
from flashspark.bench.stats import CellSummary

COMPARE_SCHEMA_VERSION = 1


class CellDelta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cell: str
    a: float
    b: float
    delta: float
    delta_pct: float | None
    spread: float
    within_noise: bool


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = COMPARE_SCHEMA_VERSION
    a: str
    b: str
    cells: list[CellDelta]


def compare_runs(a: Path, b: Path) -> Comparison:
    """Per-cell deltas of B against A; a delta inside the two runs' round-to-round spread is flagged as noise."""
    cells_a = read_results(a).cells
    cells_b = read_results(b).cells

    def key(c: CellSummary) -> str:
        return c.cell.rsplit("-r", 1)[0] if c.shape == "static" else c.cell

    def grouped(cells: list[CellSummary]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for c in cells:
            out.setdefault(key(c), []).append(c.output_throughput)
        return out

    ga, gb = grouped(cells_a), grouped(cells_b)
    rows = []
    for name in [k for k in ga if k in gb]:
        va, vb = ga[name], gb[name]
        mean_a, mean_b = sum(va) / len(va), sum(vb) / len(vb)
        spread = (max(va) - min(va)) + (max(vb) - min(vb))
        rows.append(
            CellDelta(
                cell=name,
                a=mean_a,
                b=mean_b,
                delta=mean_b - mean_a,
                delta_pct=(mean_b / mean_a - 1) * 100 if mean_a else None,
                spread=spread,
                within_noise=abs(mean_b - mean_a) <= spread,
            )
        )
    return Comparison(a=str(a), b=str(b), cells=rows)
