"""The boot evidence against what the profile expects of it: a kernel backend that silently fell back.

vLLM picks its MoE and attention kernels at start-up and logs the choice once. A fallback still
serves, only slower (DSpark with VLLM_USE_B12X_MOE=0: DEEPGEMM_MXFP4 at ~29 tok/s), so the only
evidence is that one line. A profile names the backend it expects (`[expect]`), and `up` fails
with the line that shows what was chosen instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashspark.bootlog import BootEvidence
from flashspark.recipe.model import BootExpectations


@dataclass(frozen=True)
class BackendMismatch:
    kind: str  # "MoE" | "attention"
    expected: str
    found: str | None
    line: str | None

    @property
    def message(self) -> str:
        if self.found is None:
            return f"the profile expects the {self.expected} {self.kind} backend, and the head's log names none"
        return f"the profile expects the {self.expected} {self.kind} backend; vLLM chose {self.found}: {self.line!r}"


def backend_mismatches(expect: BootExpectations, boot: BootEvidence) -> list[BackendMismatch]:
    """Each expected backend the boot log does not show (names compare without case)."""
    found = []
    for kind, expected, chosen, line in (
        ("MoE", expect.moe_backend, boot.moe_backend, boot.moe_backend_line),
        ("attention", expect.attention_backend, boot.attention_backend, boot.attention_backend_line),
    ):
        if expected is not None and (chosen is None or chosen.casefold() != expected.casefold()):
            found.append(BackendMismatch(kind, expected, chosen, line))
    return found
