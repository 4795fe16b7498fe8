"""A declared workload: the traffic a deployment must serve, what "better" means, and what `tune` may vary.

One TOML file, read by `flashspark tune --workload FILE` (and, later, the SLO predictor):

    name = "chat-8"

    [traffic]             # what the users send
    shape = "static"      # static: `concurrency` requests at once per round; rate: Poisson arrivals
    concurrency = 8
    input_tokens = 256    # every prompt exactly this long, as the server counts
    output_tokens = 64

    [objective]           # what "better" means
    optimise = "output_tokens_per_s"
    max_p95_ttft_s = 2.0
    min_per_stream_decode_tokens_per_s = 5.0

    [search]              # the declared ranges; a knob left out keeps the recipe's value
    max_num_seqs = [4, 8, 16]
    max_num_batched_tokens = [1024, 4096]
    num_speculative_tokens = [3, 5]

    [tune]                # how each candidate is measured
    rounds = 3

It lives with the recipe because it is typed input that every layer above reads, like the recipe itself.
"""

from __future__ import annotations

import itertools
import random
import tomllib
from pathlib import Path
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flashspark.errors import InputError, first_invalid

#: How many candidates one tune may measure: each is a fresh boot (a minute here, ten on a Spark).
MAX_CANDIDATES = 64
#: Values one knob may list.
MAX_VALUES = 16
#: Largest token count a workload may name (the recipe's own ceiling is 2^20; past 2^24 is a typo).
MAX_TOKENS = 1 << 24

#: What `optimise` may name, and which way is better.
OBJECTIVES: dict[str, Literal["max", "min"]] = {
    "output_tokens_per_s": "max",
    "per_stream_decode_tokens_per_s": "max",
    "p95_ttft_s": "min",
}

#: The knobs `[search]` may vary, and the recipe path each one sets.
KNOBS: dict[str, str] = {
    "max_num_seqs": "engine.max_num_seqs",
    "max_num_batched_tokens": "engine.max_num_batched_tokens",
    "num_speculative_tokens": "speculative.num_speculative_tokens",
    "gpu_memory_utilization": "engine.gpu_memory_utilization",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Traffic(_Strict):
    """What the users send."""

    shape: Literal["static", "rate"] = "static"
    concurrency: int = Field(
        default=4, ge=1, le=4096, description="static: requests released together; rate: the cap in flight."
    )
    rate: float | None = Field(default=None, gt=0, le=10_000, description="rate: mean arrivals per second.")
    requests: int = Field(default=16, ge=1, le=100_000, description="rate: requests per round.")
    input_tokens: int = Field(default=128, ge=1, le=MAX_TOKENS, description="Every prompt exactly this long.")
    output_tokens: int = Field(default=64, ge=1, le=MAX_TOKENS, description="Every reply exactly this long.")
    seed: int = Field(default=0, ge=0, description="rate: the arrival schedule's seed.")

    @model_validator(mode="after")
    def _rate_needs_a_rate(self) -> Traffic:
        if self.shape == "rate" and self.rate is None:
            raise ValueError("shape 'rate' needs rate = arrivals per second")
        if self.shape == "static" and self.rate is not None:
            raise ValueError("rate is for shape 'rate'; a static shape releases `concurrency` requests at once")
        return self

    @property
    def in_flight(self) -> int:
        """The most requests the traffic keeps in flight at once."""
        return self.concurrency if self.shape == "static" else min(self.concurrency, self.requests)

    @property
    def tokens_per_request(self) -> int:
        return self.input_tokens + self.output_tokens

    def arrivals(self) -> list[float]:
        """When each request of one round is due, in seconds from the round's start: the bench sends on
        this schedule and the SLO predictor simulates it, so both see the same arrivals."""
        if self.shape == "static":
            return [0.0] * self.concurrency
        assert self.rate is not None  # the validator
        return poisson_arrivals(self.rate, self.requests, self.seed)


def poisson_arrivals(rate: float, count: int, seed: int) -> list[float]:
    """`count` Poisson arrival times at `rate` per second, the first at 0, the same for the same seed."""
    rng = random.Random(seed)
    arrivals, now = [], 0.0
    for _ in range(count):
        arrivals.append(now)
        now += rng.expovariate(rate)
    return arrivals


class Objective(_Strict):
    """What "better" means: one metric to optimise, subject to limits."""

    optimise: Literal["output_tokens_per_s", "per_stream_decode_tokens_per_s", "p95_ttft_s"] = "output_tokens_per_s"
    max_p95_ttft_s: float | None = Field(default=None, gt=0)
    min_per_stream_decode_tokens_per_s: float | None = Field(default=None, gt=0)

    @property
    def direction(self) -> Literal["max", "min"]:
        return OBJECTIVES[self.optimise]


class SearchSpace(_Strict):
    """The declared ranges; a knob left out (or empty) keeps the recipe's value."""

    max_num_seqs: list[int] = Field(default_factory=list, max_length=MAX_VALUES)
    max_num_batched_tokens: list[int] = Field(default_factory=list, max_length=MAX_VALUES)
    num_speculative_tokens: list[int] = Field(default_factory=list, max_length=MAX_VALUES)
    gpu_memory_utilization: list[float] = Field(default_factory=list, max_length=MAX_VALUES)

    @model_validator(mode="after")
    def _values_in_range(self) -> SearchSpace:
        bounds = {
            "max_num_seqs": (1, 4096),
            "max_num_batched_tokens": (1, MAX_TOKENS),
            "num_speculative_tokens": (1, 16),
        }
        for knob, (low, high) in bounds.items():
            for value in getattr(self, knob):
                if not low <= value <= high:
                    raise ValueError(f"{knob} value {value} is outside {low}..{high}")
        for value in self.gpu_memory_utilization:
            if not 0 < value <= 1:
                raise ValueError(f"gpu_memory_utilization value {value} is outside (0, 1]")
        for knob in KNOBS:
            values = getattr(self, knob)
            if len(set(values)) != len(values):
                raise ValueError(f"{knob} lists a value twice")
        return self

    def varied(self) -> dict[str, list[int | float]]:
        """Knob -> its declared values, for the knobs declared."""
        return {knob: list(getattr(self, knob)) for knob in KNOBS if getattr(self, knob)}

    def grid(self) -> list[dict[str, int | float]]:
        """Every combination of the declared values (one empty combination when nothing varies)."""
        varied = self.varied()
        return [dict(zip(varied, values, strict=True)) for values in itertools.product(*varied.values())]


class TuneSettings(_Strict):
    """How each candidate is measured."""

    rounds: int = Field(default=3, ge=2, le=15, description="Measured rounds per candidate: the run-to-run spread.")
    warmup_rounds: int = Field(
        default=1, ge=0, le=5, description="Rounds of the traffic run first and left out of the numbers."
    )
    warmup_requests: int = Field(default=1, ge=0, le=64, description="Serial warm-up requests before each round.")


class Workload(_Strict):
    """The whole declaration (schema version 1)."""

    schema_version: Literal[1] = 1
    name: str = Field(default="workload", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    traffic: Traffic = Traffic()
    objective: Objective = Objective()
    search: SearchSpace = SearchSpace()
    tune: TuneSettings = TuneSettings()

    @model_validator(mode="after")
    def _bounded(self) -> Workload:
        count = len(self.search.grid())
        if count > MAX_CANDIDATES:
            raise ValueError(
                f"the search declares {count} combinations; at most {MAX_CANDIDATES} (each is a fresh boot)"
            )
        return self


def load_workload(path: Path) -> Workload:
    """Read and check a workload file; every problem names the key, the file and the fix."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the workload: {exc}", key="--workload", where=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"the workload is not TOML: {exc}", key="--workload", where=str(path)) from None
    try:
        return Workload.model_validate(data)
    except pydantic.ValidationError as exc:
        key, message = first_invalid(exc)
        raise InputError(
            f"{key}: {message}",
            key=key,
            where=str(path),
            fix="see `flashspark tune --help` for the workload's keys and ranges",
        ) from None
