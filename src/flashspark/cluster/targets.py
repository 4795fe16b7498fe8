"""Which server a gate or a benchmark talks to, and what is known about it.

`--base-url` names any OpenAI-compatible server; without it the target is the
deployment FlashSpark started from this recipe (its recorded URL, and the pins
its boot.json holds), else the URL the recipe renders. The recipe describes
the server only when the user pointed at it (no --base-url, or a recipe given
explicitly): gates then take the draft length and acceptance floor from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashspark.client import OpenAIClient, Timeouts
from flashspark.cluster.lifecycle import recorded_state
from flashspark.pins import Pins
from flashspark.recipe.model import Recipe
from flashspark.render import api_base_url


@dataclass(frozen=True)
class Target:
    base_url: str
    api_key: str | None
    recipe: Recipe
    describes_server: bool
    boot_json: str | None = None
    boot: dict[str, Any] | None = None
    timeouts: Timeouts | None = None

    @property
    def server_recipe(self) -> Recipe | None:
        """The recipe when it describes the server, for gate settings (draft length, floor)."""
        return self.recipe if self.describes_server else None

    @property
    def pins(self) -> Pins:
        """The pin set recorded at boot, when FlashSpark started the deployment (else empty)."""
        if self.boot is None:
            return Pins()
        return Pins.model_validate(self.boot.get("pins", {})).merged(boot_json=self.boot_json)

    def client(self, headers: dict[str, str] | None = None) -> OpenAIClient:
        return OpenAIClient(self.base_url, api_key=self.api_key, timeouts=self.timeouts, headers=headers)


# Where a key for the server may come from besides the recipe: the environment, so that it never has to
# be typed on a command line (visible in `ps`).
KEY_VARIABLES = ("VLLM_API_KEY", "OPENAI_API_KEY")


def resolve_target(
    recipe: Recipe,
    *,
    base_url: str | None,
    explicit_recipe: bool,
    timeouts: Timeouts | None = None,
    environ: Mapping[str, str] | None = None,
) -> Target:
    """The server to talk to (see the module's docstring) and its boot record when FlashSpark started it.

    The API key is the recipe's, else the first of VLLM_API_KEY and OPENAI_API_KEY set in the environment.
    """
    environ = os.environ if environ is None else environ
    from_environment = next((environ[name] for name in KEY_VARIABLES if environ.get(name)), None)
    boot_json, boot = None, None
    describes_server = base_url is None or explicit_recipe
    if base_url is None:
        state = recorded_state(recipe)
        base_url = state.base_url if state is not None else api_base_url(recipe)
        path = Path(state.run_dir) / "boot.json" if state is not None else None
        if path is not None and path.is_file():
            boot_json, boot = str(path), json.loads(path.read_text())
    return Target(
        base_url=base_url,
        api_key=recipe.api_key or from_environment,
        recipe=recipe,
        describes_server=describes_server,
        boot_json=boot_json,
        boot=boot,
        timeouts=timeouts,
    )
