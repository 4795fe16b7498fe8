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
from flashspark.recipe.resolve import ResolvedRecipe, default_home, resolve_recipe
from flashspark.recipe.sources import DEFAULT_PROFILE, load_profile_tree, profile_names

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
    "Recipe",
    "ResolvedRecipe",
    "SpeculativeSettings",
    "default_home",
    "load_profile_tree",
    "profile_names",
    "resolve_recipe",
]
