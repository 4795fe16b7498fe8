"""How long `flashspark --help` (and tab completion) takes to start: the target is under 0.5 s.

Runs the CLI in a fresh interpreter N times and prints the median and the best wall time, and
the modules that cost the most to import (python -X importtime). `--src DIR` measures another
checkout's source tree with this environment's packages, for a before/after comparison:

    python benchmarks/cli_startup.py
    git worktree add /tmp/before <commit> && python benchmarks/cli_startup.py --src /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5
SNIPPET = "import sys; sys.argv = ['flashspark', *sys.argv[1:]]; from flashspark.cli.main import main; main()"


def command(src: Path | None, *args: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    return [sys.executable, "-c", SNIPPET, *args], env


def timed(src: Path | None, args: list[str], runs: int) -> list[float]:
    argv, env = command(src, *args)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return times


def heaviest_imports(src: Path | None, count: int) -> list[tuple[float, str]]:
    argv, env = command(src, "--help")
    result = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True, check=False
    )
    rows = []
    for line in result.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]) / 1e6, parts[2].rstrip()))
    # Direct imports of the top-level modules (one level of indentation under them).
    direct = [(s, name) for s, name in rows if name.startswith("   ") and not name.startswith("     ")]
    return sorted(direct, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=None, help="A checkout's src/ folder (default: the installed one).")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    for label, cli_args in (("--help", ["--help"]), ("bench static --help", ["bench", "static", "--help"])):
        times = timed(args.src, cli_args, args.runs)
        median = statistics.median(times)
        print(
            f"flashspark {label}: median {median:.3f} s, best {min(times):.3f} s over {args.runs} runs "
            f"({median / TARGET_S:.2f}x the {TARGET_S} s target)"
        )
    print("heaviest imports under the entry point (cumulative s):")
    for seconds, name in heaviest_imports(args.src, 8):
        print(f"  {seconds:.3f}  {name.strip()}")


if __name__ == "__main__":
    main()
