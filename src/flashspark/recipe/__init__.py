"""The recipe: typed profiles and cluster config, the single source of truth for defaults."""

from flashspark.recipe.model import (
    ApiSettings,
    ClusterSettings,
    EngineSettings,
    GenerationFloor,
    ModelSpec,
    Node,
    ParallelSettings,
    ProfileInfo,
    Recipe,
    SpeculativeSettings,
)
from flashspark.recipe.resolve import ResolvedRecipe, default_home, default_models_dir, resolve_recipe
from flashspark.recipe.sources import (
    DEFAULT_PROFILE,
    ProfileSummary,
    load_profile_tree,
    profile_names,
    profile_summaries,
)

__all__ = [
    "DEFAULT_PROFILE",
    "ApiSettings",
    "ClusterSettings",
    "EngineSettings",
    "GenerationFloor",
    "ModelSpec",
    "Node",
    "ParallelSettings",
    "ProfileInfo",
    "ProfileSummary",
    "Recipe",
    "ResolvedRecipe",
    "SpeculativeSettings",
    "default_home",
    "default_models_dir",
    "load_profile_tree",
    "profile_names",
    "profile_summaries",
    "resolve_recipe",
]
