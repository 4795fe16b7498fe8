"""Terminal output for the CLI: Rich tables for people, plain JSON for machines."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flashspark.errors import FlashsparkError, PhaseFailed, Problem, RecipeInvalid
from flashspark.recipe import Recipe, ResolvedRecipe
from flashspark.render import LaunchPlan

# Off a terminal Rich assumes 80 columns; logs and CI read better wider.
_WIDTH = None if sys.stdout.isatty() else 120
out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)


def print_plain(text: str, *, err: bool = False) -> None:
    (globals()["err"] if err else out).print(text, markup=False)


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()  # a supervising `up` keeps running after its first document
    sys.stdout.flush()


def error_payload(error: FlashsparkError) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "ok": False,
        "error": type(error).__name__,
        "message": error.message,
        "key": error.key,
        "value": None if error.value is None else str(error.value),
        "where": error.where,
        "fix": error.fix,
    }
    if isinstance(error, RecipeInvalid):
        payload["problems"] = [problem_payload(p) for p in error.problems]
    if isinstance(error, PhaseFailed):
        payload["phase"] = error.phase
        payload["log_tail"] = error.log_tail
    return payload


def print_error(error: FlashsparkError) -> None:
    if isinstance(error, RecipeInvalid):
        print_problems(error.problems)
        return
    err.print(f"[bold red]error:[/] {error.describe()}", markup=True)


def problem_payload(problem: Problem) -> dict[str, Any]:
    return {
        "severity": problem.severity,
        "key": problem.key,
        "value": None if problem.value is None else str(problem.value),
        "rule": problem.rule,
        "fix": problem.fix,
        "where": problem.where,
    }


def check_payload(resolved: ResolvedRecipe | None, problems: Sequence[Problem]) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "ok": not any(p.severity == "error" for p in problems),
        "problems": [problem_payload(p) for p in problems],
    }
    if resolved is not None:
        payload["profile"] = resolved.recipe.profile.name
        payload["recipe"] = resolved.recipe.public_dict()
        payload["origins"] = {path: o.describe() for path, o in sorted(resolved.origins.items())}
    return payload


_STYLE = {"error": "bold red", "warning": "yellow", "note": "dim"}


def print_problems(problems: Sequence[Problem], *, heading: str | None = None) -> None:
    if not problems:
        return
    if heading:
        err.print(f"[bold]{heading}[/]")
    for problem in problems:
        style = _STYLE.get(problem.severity, "")
        shown = "<unset>" if problem.value is None else repr(problem.value)
        where = f" [dim]({problem.where})[/]" if problem.where else ""
        err.print(
            f"[{style}]{problem.severity}:[/] [bold]{problem.key}[/] = {_escape(shown)}: {_escape(problem.rule)}{where}"
        )
        err.print(f"  fix: {_escape(problem.fix)}")


def print_check(resolved: ResolvedRecipe) -> None:
    recipe = resolved.recipe
    print_problems(resolved.problems)
    if resolved.errors:
        err.print(f"[bold red]{len(resolved.errors)} error(s)[/]: the recipe is not usable yet.")
        return
    table = Table(title=f"profile {recipe.profile.name}: {recipe.profile.summary}", show_header=False)
    table.add_column("setting")
    table.add_column("value")
    table.add_column("from", style="dim")
    rows = [
        ("nodes", ", ".join(f"{n.name} ({n.ssh})" for n in recipe.nodes), "nodes"),
        ("model", recipe.model.id, "model.id"),
        ("served as", recipe.model.served_name, "model.served_name"),
        ("max_model_len", recipe.engine.max_model_len, "engine.max_model_len"),
        ("max_num_seqs", recipe.engine.max_num_seqs, "engine.max_num_seqs"),
        ("kv_cache_dtype", recipe.engine.kv_cache_dtype, "engine.kv_cache_dtype"),
        (
            "speculative",
            recipe.speculative.to_json() if recipe.speculative.enabled else "off",
            "speculative.num_speculative_tokens",
        ),
        (
            "parallel",
            f"TP {recipe.parallel.tensor_parallel_size} x PP {recipe.parallel.pipeline_parallel_size}",
            "parallel.tensor_parallel_size",
        ),
        ("API", f"{recipe.api.host}:{recipe.api.port}", "api.host"),
        ("runtime", recipe.cluster.runtime, "cluster.runtime"),
    ]
    for label, value, path in rows:
        table.add_row(label, _escape(str(value)), resolved.origin_of(path))
    out.print(table)
    out.print("[green]ok[/]: the recipe is valid.")


def print_profiles(rows: Sequence[dict[str, Any]]) -> None:
    table = Table(title="FlashSpark profiles")
    for column in ("name", "max_model_len", "max_num_seqs", "kv_cache_dtype", "speculative", "summary"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(
                _escape(str(row[c]) if row[c] is not None else "-")
                for c in ("name", "max_model_len", "max_num_seqs", "kv_cache_dtype", "speculative", "summary")
            )
        )
    out.print(table)
    out.print("Show one in full: flashspark profiles NAME")


def print_profile(recipe: Recipe) -> None:
    profile = recipe.profile
    out.print(f"[bold]{profile.name}[/]: {_escape(profile.summary)}")
    out.print(f"\n[bold]evidence[/]\n{_escape(profile.evidence.strip())}")
    if profile.decisions:
        out.print("\n[bold]decisions[/]")
        for decision in profile.decisions:
            out.print(f" - {_escape(decision)}")
    out.print("\n[bold]settings[/]")
    data = recipe.public_dict()
    for section in ("model", "engine", "speculative", "generation", "parallel", "api", "cluster"):
        values = {k: v for k, v in data[section].items() if v not in (None, [], {}, False)}
        out.print(f"  [cyan]{section}[/] {_escape(json.dumps(values))}")
    out.print("\n[bold]environment groups[/]")
    for group, values in recipe.env.items():
        out.print(f"  [cyan]{group}[/]")
        for key, value in values.items():
            out.print(f"    {key}={_escape(value)}")


def print_plan(plan: LaunchPlan, written: Sequence[Path]) -> None:
    out.print(f"[bold]{plan.deployment}[/] ({plan.profile}, {plan.runtime}); API {plan.api_base_url}")
    for node in plan.start_order:
        out.print(f"\n[bold]rank {node.rank}[/] {node.name} ({node.role}, {node.ssh})")
        out.print(f"  [dim]$[/] {_escape(node.command_line())}")
        for key, value in node.env.items():
            out.print(f"  [dim]env[/] {key}={_escape(value)}")
        for key in node.secret_env:
            out.print(f"  [dim]env[/] {key}=<secret, from an owner-only env file>")
        for key, value in node.pending.items():
            out.print(f"  [dim]env[/] {key}=<{value}: resolved on the node at launch>")
    if written:
        out.print("\nwrote " + ", ".join(str(p) for p in written))


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


class ConsoleEvents:
    """Lifecycle progress on stderr: phases as they start and end, node log lines dimmed."""

    def __init__(self, *, show_logs: bool = True) -> None:
        self.show_logs = show_logs
        self._started: dict[str, float] = {}

    def phase(self, name: str, status: str, detail: str = "") -> None:
        mark = {"start": "[cyan]…[/]", "ok": "[green]✓[/]", "fail": "[bold red]✗[/]"}.get(status, status)
        suffix = f" [dim]{_escape(detail)}[/]" if detail else ""
        err.print(f"{mark} {_escape(name)}{suffix}")

    def log_line(self, node: str, line: str) -> None:
        if self.show_logs:
            err.print(f"[dim]  {node} | {_escape(line[:300])}[/]")

    def note(self, text: str) -> None:
        err.print(f"  {_escape(text)}")


def print_up(payload: dict[str, Any]) -> None:
    boot = payload["boot"]
    out.print(f"[green]up[/]: {payload['deployment']} serves {payload['base_url']} (ready in {payload['boot_s']} s)")
    if boot.get("kv_cache_tokens") is not None:
        out.print(
            f"  KV cache: {boot['kv_cache_tokens']:,} tokens ({boot.get('kv_cache_device') or '?'}), "
            f"maximum concurrency {boot.get('max_concurrency')}x for "
            f"{boot.get('max_concurrency_for_tokens'):,} tokens per request"
        )
    out.print(f"  vLLM {boot.get('vllm_version')}, engine init {boot.get('engine_init_s')} s")
    out.print(f"  evidence: {payload['boot_json']}")
    out.print("  next: flashspark smoke   |   flashspark status   |   flashspark down")


def print_down(payload: dict[str, Any]) -> None:
    if not payload["was_running"]:
        out.print(f"{payload['deployment']}: not running (port free: {payload['port_free']})")
        return
    if payload["clean"]:
        out.print(
            f"[green]down[/]: {payload['deployment']} stopped ({', '.join(payload['stopped'])}); "
            "no process left, port free"
        )
    else:
        err.print(f"[bold red]down incomplete[/]: {payload['deployment']}")
        for node in payload.get("stopped", []):
            err.print(f"  {node}: stopped, nothing left")
        for node, items in payload.get("leftovers", {}).items():
            err.print(f"  {node}: still there: {', '.join(items)}")
        for node, why in payload.get("unreachable", {}).items():
            err.print(f"  {node}: UNREACHABLE, not verified: {why}")
        if payload["leftover_pids"]:
            err.print(f"  leftover pids {payload['leftover_pids']}")
        if not payload["port_free"]:
            err.print("  the API port is still taken")
        err.print("  fix what is named above, then run `flashspark down` again (it is safe to repeat)")


def print_cluster_status(report: dict[str, Any]) -> None:
    state = "[green]serving[/]" if report["running"] else "[bold red]not serving[/]"
    api = report["api"]
    out.print(f"{report['deployment']} ({report['profile']}, {report['runtime']}): {state} at {report['base_url']}")
    table = Table()
    for column in ("node", "rank", "reachable", "engine", "image", "ports"):
        table.add_column(column)
    for node in report["nodes"]:
        ports = ", ".join(
            f"{p['port']} {'listening' if p['listening'] else 'free'}" for p in node.get("ports", {}).values()
        )
        image = node.get("image_id") or node.get("vllm_bin") or ""
        table.add_row(
            node["node"],
            str(node["rank"]),
            "yes" if node.get("reachable") else "[red]NO[/]",
            str(node.get("state")),
            str(image)[:40],
            ports,
        )
    out.print(table)
    models = ", ".join(f"{m['id']} (max_model_len {m['max_model_len']})" for m in api["models"]) or "none"
    out.print(f"  /health: {api['health']}  vLLM: {api.get('version')}  models: {models}")
    if report.get("same_image_everywhere") is False:
        err.print("  [bold red]the nodes run different images (or one is missing)[/]")


def print_capture_diff(report: dict[str, Any]) -> None:
    out.print(f"capture diff: A={report['a']}  B={report['b']}")
    for name in report["only_in_a"]:
        out.print(f"  only in A: {name}")
    for name in report["only_in_b"]:
        out.print(f"  only in B: {name}")
    for name, lines in report["diffs"].items():
        out.print(f"[bold]changed: {name}[/]")
        for line in lines:
            out.print(f"  {line}", markup=False, highlight=False)
    deltas = report.get("counter_deltas") or {}
    if deltas:
        out.print("[bold]metric counters (B - A)[/]")
        for name, value in deltas.items():
            out.print(f"  {name}: {value:+g}")
    if not (report["only_in_a"] or report["only_in_b"] or report["changed"]):
        out.print("  identical")


def print_status(report: dict[str, Any]) -> None:
    if not report.get("nodes"):
        out.print(f"{report['deployment']}: not running")
        return
    state = "[green]serving[/]" if report["running"] else "[bold red]not serving[/]"
    out.print(f"{report['deployment']} ({report.get('profile')}): {state} at {report.get('base_url')}")
    for node in report["nodes"]:
        out.print(
            f"  {node['node']} rank {node['rank']}: pid {node['pid']} "
            f"{'alive' if node['alive'] else 'DEAD'}; log {node['log']}"
        )
    out.print(
        f"  port open: {report.get('port_open')}, /health: {report.get('health')}, models: {report.get('models')}"
    )


def print_smoke(report: Any) -> None:
    table = Table(title=f"smoke: expect {report.expect!r} from {report.model} at {report.base_url}")
    for column in ("#", "ok", "ttft s", "e2e s", "tokens", "reply / error"):
        table.add_column(column)
    for r in report.requests:
        table.add_row(
            str(r.index),
            "[green]yes[/]" if r.ok else "[red]no[/]",
            f"{r.ttft_s:.3f}" if r.ttft_s is not None else "-",
            f"{r.e2e_s:.3f}" if r.e2e_s is not None else "-",
            str(r.completion_tokens),
            _escape(r.error or repr(r.content)),
        )
    out.print(table)
    verdict = "[green]pass[/]" if report.ok else "[bold red]FAIL[/]"
    out.print(f"{verdict}: {report.passed}/{report.concurrency} exact in {report.wall_s:.2f} s")


def print_sanity_level(level: Any) -> None:
    fired = f" fired: {level.detectors_fired}" if level.detectors_fired else ""
    err.print(
        f"  c{level.concurrency}: {level.good}/{level.total} good, {level.errors} errors, "
        f"{level.aggregate_tokens_per_s:.1f} tok/s aggregate{_escape(fired)}"
    )


def print_sanity(report: Any) -> None:
    table = Table(
        title=f"sanity: {report.model}, max_tokens {report.max_tokens}" + (", strict CJK" if report.strict_cjk else "")
    )
    for column in ("concurrency", "success", "bad", "errors", "agg tok/s", "per-req tok/s", "detectors fired"):
        table.add_column(column)
    for s in report.levels:
        per = f"{s.per_request_tokens_per_s_mean:.1f}" if s.per_request_tokens_per_s_mean is not None else "-"
        table.add_row(
            str(s.concurrency),
            s.success,
            str(s.bad),
            str(s.errors),
            f"{s.aggregate_tokens_per_s:.1f}",
            per,
            _escape(", ".join(f"{k} x{v}" for k, v in s.detectors_fired.items()) or "-"),
        )
    out.print(table)
    out.print(f"evidence: {report.evidence_path}")
    out.print("[green]pass[/]: no bad outputs" if report.ok else "[bold red]FAIL[/]: bad outputs (see detectors)")


def print_correctness(report: Any) -> None:
    if report.reference_error:
        err.print(f"[bold red]reference request failed[/]: {_escape(report.reference_error)}")
    for mode in report.modes:
        rate = "n/a" if mode.acceptance_rate is None else f"{mode.acceptance_rate:.3f}"
        floor = "none" if mode.acceptance_floor is None else f"{mode.acceptance_floor:.2f}"
        verdict = "[green]ok[/]" if mode.ok else "[bold red]FAIL[/]"
        out.print(
            f"{verdict} {mode.mode}: identical={mode.identical}, churn {mode.churn_requests} requests "
            f"({mode.churn_errors} errors), acceptance {rate} (floor {floor}), {mode.window_s:.1f} s"
        )
        if mode.divergence is not None:
            out.print(f"  first difference at offset {mode.divergence.offset}:")
            out.print(f"    reference: {_escape(repr(mode.divergence.reference_window))}")
            out.print(f"    victim:    {_escape(repr(mode.divergence.victim_window))}")
        if mode.victim_error:
            out.print(f"  victim error: {_escape(mode.victim_error)}")
    out.print("[green]pass[/]" if report.ok else "[bold red]FAIL[/]")


_STATUS = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]skip[/]", "error": "[bold red]ERROR[/]"}


def print_gate(result: Any) -> None:
    err.print(
        f"{_STATUS.get(result.status, result.status)} {result.name} ({result.duration_s:.1f} s): "
        f"{_escape(result.summary)}"
    )


def print_validation(result: Any, path: Path) -> None:
    table = Table(title=f"validate: {result.model} at {result.base_url} (vLLM {result.pins.get('vllm_version')})")
    for column in ("gate", "status", "seconds", "summary"):
        table.add_column(column)
    for gate in result.gates:
        table.add_row(gate.name, _STATUS.get(gate.status, gate.status), f"{gate.duration_s:.1f}", _escape(gate.summary))
    out.print(table)
    out.print(f"evidence: {path}")
    out.print("[green]all gates pass[/]" if result.ok else "[bold red]validation FAILED[/]")


def print_plan_result(result: Any) -> None:
    title = f"KV plan: {result.model}, {result.formula} formula ({result.formula_source}; vLLM {result.vllm_version})"
    table = Table(title=title)
    for column in ("quantity", "value", "unit", "source", "note"):
        table.add_column(column)
    for q in result.quantities:
        value = f"{q.value:,}" if isinstance(q.value, int) else str(q.value)
        table.add_row(q.name, value, q.unit, q.source, _escape(q.note))
    out.print(table)
    if result.calibration:
        c = result.calibration
        out.print(
            f"[bold]calibration[/]: logged {c['logged_kv_cache_tokens']:,} tokens / {c['logged_max_concurrency']}x;"
            f" predicted {c['predicted_kv_cache_tokens']:,} / {c['predicted_max_concurrency']}x "
            f"(error {c['kv_cache_tokens_error_pct']} % / {c['max_concurrency_error_pct']} %)"
        )
    if result.workload:
        w = result.workload
        out.print(
            f"[bold]workload {w['spec']}[/]: {w['verdict']} — {w['live_tokens']:,} live tokens in "
            f"{w['requests']} requests use {w['used_blocks']:,} of {w['pool_blocks']:,} blocks "
            f"({w['used_share']:.0%}, incl. {w['transient_blocks']:,} for one prefill chunk and "
            f"{w['fixed_blocks_per_request']} fixed per request); {w['queued_or_preempted']} would queue "
            f"or be preempted" + (f"; {w['over_max_num_seqs']} over max_num_seqs" if w["over_max_num_seqs"] else "")
        )
    sens = Table(title="sensitivity")
    for column in ("knob", "value", "KV cache tokens", "max concurrency"):
        sens.add_column(column)
    for row in result.sensitivity:
        sens.add_row(
            row["knob"],
            f"{row['value']:,}" if isinstance(row["value"], int) else str(row["value"]),
            f"{row['kv_cache_tokens']:,}",
            str(row["max_concurrency"]),
        )
    out.print(sens)
    for line in result.advice:
        out.print(f"advice: {_escape(line)}")
    if result.speed:
        s = result.speed
        out.print(
            f"[bold]speed ceiling[/]: {s['tokens_per_s']} tok/s single stream at {s['context_tokens']:,} context "
            f"(tau {s['mean_acceptance_length']}, {s['mean_acceptance_length_source']}; step "
            f"{s['step_ms']} ms reading {s['weights_gb_per_step']} GB weights + {s['kv_gb_per_step']} GB KV); "
            f"without drafting {s['no_spec_tokens_per_s']} tok/s. {s['assumptions']}."
        )


def bench_request_line(record: Any) -> str:
    """One finished request as a plain line."""
    if record.error is not None:
        return f"  ✗ {record.cell} #{record.index} {record.category}: {record.error}"
    rate = f"{record.decode_tokens_per_s:.1f}" if record.decode_tokens_per_s is not None else "-"
    ttft = f"{record.ttft_s * 1000:.0f}" if record.ttft_s is not None else "-"
    head = f"  {record.cell} #{record.index} {record.category}"
    return f"{head}: {record.output_tokens} tokens, TTFT {ttft} ms, {rate} tok/s"


def print_bench_cell(cell: dict[str, Any]) -> None:
    acceptance = cell.get("spec_decode_acceptance_rate")
    err.print(
        f"[bold]{cell['cell']}[/]: {cell['completed']}/{cell['requests']} ok, "
        f"{cell['output_throughput']:.1f} tok/s aggregate, per-stream "
        f"{cell['per_stream_decode_tokens_per_s_mean'] or 0:.1f} tok/s, TTFT p50 "
        f"{cell['median_ttft_ms'] or 0:.0f} ms" + (f", acceptance {acceptance:.3f}" if acceptance is not None else "")
    )
    for warning in cell.get("warnings", []):
        err.print(f"  [yellow]warning:[/] {_escape(warning)}")


def print_compare(rows: list[dict[str, Any]]) -> None:
    table = Table(title="compare: aggregate tok/s, B against A")
    for column in ("cell", "A", "B", "delta", "delta %", "spread", "verdict"):
        table.add_column(column)
    for r in rows:
        pct = f"{r['delta_pct']:+.1f}" if r["delta_pct"] is not None else "-"
        table.add_row(
            r["cell"],
            f"{r['a']:.1f}",
            f"{r['b']:.1f}",
            f"{r['delta']:+.1f}",
            pct,
            f"{r['spread']:.1f}",
            "within noise" if r["within_noise"] else "[bold]changed[/]",
        )
    out.print(table)


class BenchProgress:
    """Live progress on a terminal (a Rich bar); plain lines when stderr is a file or a pipe."""

    def __init__(self, *, total: int, quiet: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.live = err.is_terminal and not quiet
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
                refresh_per_second=4,  # each refresh holds the GIL the timing loop needs
            )
            if self.live
            else None
        )
        self._task = self._progress.add_task("requests", total=total) if self._progress else None

    def __enter__(self) -> BenchProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def request(self, record: Any) -> None:
        # Called on the event loop that times the other streams: a Rich print costs ~0.6 ms here (a
        # 256-request wave would stall the loop 150 ms), a plain write ~5 µs.
        if self.quiet:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, description=record.cell)
            if record.error is not None:
                self._progress.console.print(bench_request_line(record), markup=False, style="red")
        else:
            sys.stderr.write(bench_request_line(record) + "\n")

    def cell(self, summary: dict[str, Any]) -> None:
        if not self.quiet:
            print_bench_cell(summary)


def print_model_verify(report: Any) -> None:
    where = f"{report.model}@{report.revision}" + (f" ({report.commit[:12]})" if report.commit else "")
    if report.ok:
        total = sum(s.size or 0 for s in report.shards)
        out.print(f"[green]ok[/]: {where}: {len(report.shards)} shards complete, {total / 1e9:.2f} GB")
        return
    err.print(f"[bold red]incomplete[/]: {where}")
    for problem in report.problems:
        err.print(f"  {_escape(problem)}")


def print_preflight(checks: Sequence[Any]) -> None:
    table = Table(title="preflight")
    for column in ("node", "check", "ok", "detail / fix"):
        table.add_column(column)
    for c in checks:
        table.add_row(
            c.node,
            c.check,
            "[green]yes[/]" if c.ok else "[bold red]no[/]",
            _escape(c.detail if c.ok else f"{c.detail} — fix: {c.fix}"),
        )
    out.print(table)
    failed = [c for c in checks if not c.ok]
    out.print("[green]all nodes ready[/]" if not failed else f"[bold red]{len(failed)} check(s) failed[/]")


def print_image_build(report: dict[str, Any]) -> None:
    out.print(f"image {report['tag']}: manifest sha256 {report['manifest_sha256'][:16]}…")
    for node, row in report["nodes"].items():
        out.print(f"  {node}: {row['action']} ({str(row['image_id'])[:19]})")
    verdict = "[green]the same image on every node[/]" if report["same_image_everywhere"] else "[red]images differ[/]"
    out.print(f"  {verdict}; manifest and Dockerfile record in {report.get('run_dir')}")


def print_image_verify(report: dict[str, Any]) -> None:
    table = Table(title=f"image verify {report.get('tag', '(installed vLLM)')}")
    for column in ("node", "image / vLLM root", "manifest", "result"):
        table.add_column(column)
    for row in report["nodes"]:
        where = str(row.get("image_id") or row.get("vllm_root") or "")[:40]
        manifest = str(row.get("manifest_sha256") or report.get("manifest_sha256") or "")[:12]
        result = "[green]ok[/]" if not row["problems"] else "[red]" + _escape("; ".join(row["problems"])) + "[/]"
        table.add_row(row["node"], where, manifest, result)
    out.print(table)
    for problem in report.get("problems", []):
        err.print(f"[red]{_escape(problem)}[/]")
    out.print("[green]verified[/]" if report["ok"] else "[bold red]verification FAILED[/]")


def print_model_verify_nodes(report: dict[str, Any]) -> None:
    out.print(f"model {report['model']} at {report['revision']}, per node:")
    for row in report["nodes"]:
        commit = (row["report"] or {}).get("commit") or "?"
        if row["ok"]:
            shards = len((row["report"] or {}).get("shards", []))
            out.print(f"  [green]{row['node']}: ok[/] ({shards} shards, commit {str(commit)[:12]})")
        else:
            out.print(f"  [red]{row['node']}: " + _escape("; ".join(row["problems"])) + "[/]")
    if not report["same_commit_everywhere"]:
        err.print("[red]the nodes hold different commits[/]")
