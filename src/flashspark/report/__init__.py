"""Reports for people from the JSON a run left behind: Markdown notes and PNG plots."""

from __future__ import annotations

from pathlib import Path

from flashspark.errors import InputError

# The file that says what kind of run a directory holds, and the writer of its report. Writers are
# imported when used: matplotlib costs a second to import.
RUN_KINDS = {
    "results.json": "static, staggered or rate bench",
    "depth.json": "bench depth",
    "sessions.json": "bench sessions",
    "replay.json": "replay",
    "record.json": "record",
}


def write_run_report(run_dir: Path) -> list[Path]:
    """Write report.md and the plots of whatever run `run_dir` holds; return the files written."""
    if (run_dir / "results.json").is_file():
        from flashspark.report.checkpoint import write_report

        return write_report(run_dir)
    if (run_dir / "depth.json").is_file():
        from flashspark.report.depth_report import write_depth_report

        return write_depth_report(run_dir)
    if (run_dir / "sessions.json").is_file():
        from flashspark.report.sessions_report import write_sessions_report

        return write_sessions_report(run_dir)
    if (run_dir / "replay.json").is_file():
        from flashspark.report.traffic_report import write_replay_report

        return write_replay_report(run_dir)
    if (run_dir / "record.json").is_file():
        from flashspark.report.traffic_report import write_record_report

        return write_record_report(run_dir)
    raise InputError(
        f"{run_dir} holds no run FlashSpark can report on",
        where=str(run_dir),
        fix="point at a run directory with one of: "
        + ", ".join(f"{name} ({kind})" for name, kind in RUN_KINDS.items()),
    )
