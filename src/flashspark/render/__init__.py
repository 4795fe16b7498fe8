"""Render: a resolved recipe becomes a per-node launch plan (argv, env, compose). No I/O."""

from flashspark.render.addresses import api_base_url, probe_host
from flashspark.render.launch import LaunchPlan, NodeLaunch, render_plan, resolve_model_path

__all__ = ["LaunchPlan", "NodeLaunch", "api_base_url", "probe_host", "render_plan", "resolve_model_path"]
