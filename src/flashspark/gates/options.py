"""Every gate's defaults in one light module: the gates and the CLI's options both read them here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# The phrase the smoke prompt asks the model to repeat. It is fixed, not taken from --expect:
# an echo prompt built from the expectation would make any expectation pass.
SMOKE_PHRASE = "NVFP4 DSPARK OK"
GATES = ("readiness", "smoke", "sanity", "tools", "longdecode", "correctness", "speculative")
CHURN_MODES = ("condense", "staggered")


class SmokeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(default=1, ge=1, le=512, description="Identical requests sent at once.")
    expect: str = Field(default=SMOKE_PHRASE, description="The exact reply each request must return.")
    max_tokens: int = Field(default=16, ge=1)


class SanityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: tuple[int, ...] = Field(default=(1, 2, 4, 6), description="Concurrency levels, run in turn.")
    max_tokens: int = Field(default=160, ge=1)
    strict_cjk: bool = Field(default=False, description="Any CJK/kana/hangul character fails a reply.")


SMOKE = SmokeOptions()
SANITY = SanityOptions()
