"""Measuring without the cyclic garbage collector's pauses."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No cyclic garbage collection while a cell is measured.

    A full collection over a client holding hundreds of streams stops the event
    loop for tens of milliseconds (seen here as ~30 ms first-token spikes at 64
    streams), and that pause would be reported as server latency. Reference
    counting still frees almost everything; the cycles are collected after the cell.
    """
    gc.freeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()
        gc.collect()
