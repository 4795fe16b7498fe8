"""How close the SLO predictor lands: ladders measured, two workloads predicted, then measured.

Against a running deployment (default: the embedded one, `flashspark up --local`), through the CLI a
user would run:

    flashspark bench depth   --contexts 64,256,512,1k,2k,4k --repeats 2      (prefill against depth)
    flashspark bench static  --concurrency 1,2,4,8,16 --input-tokens 128      (decode against concurrency)
    flashspark plan --workload W --predict-slo --ladder DEPTH --ladder STATIC --save W.slo.json
    flashspark bench workload --workload W --predicted W.slo.json

for W in examples/slo/burst.toml and examples/slo/poisson.toml, and prints predicted, measured and the
error of p50/p95 TTFT and per-stream decode, against the 15 % target. About 6 minutes on 2 cores.

    python benchmarks/slo_prediction.py [--out DIR] [--set VLLM_PORT=18888]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

FLASHSPARK = str(Path(sys.executable).parent / "flashspark")
ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = (ROOT / "examples" / "slo" / "burst.toml", ROOT / "examples" / "slo" / "poisson.toml")
TARGET = 0.15


def cli(*args: str) -> str:
    done = subprocess.run([FLASHSPARK, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"flashspark {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Folder for every run (default: a temp folder).")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="Passed to every command.")
    parser.add_argument("--static-input-tokens", default="128", help="Comma list: one decode ladder per length.")
    options = parser.parse_args()
    out = options.out or Path(tempfile.mkdtemp(prefix="slo-bench-"))
    sets = [arg for item in options.sets for arg in ("--set", item)]
    depth = out / "ladder-depth"
    cli("bench", "depth", "--contexts", "64,256,512,1k,2k,4k", "--repeats", "2", "--out", str(depth), "--json", *sets)
    ladders = ["--ladder", str(depth)]
    for length in options.static_input_tokens.split(","):
        static = out / f"ladder-static-{length}"
        cli(
            "bench", "static", "--concurrency", "1,2,4,8,16", "--input-tokens", length, "--max-tokens", "64",
            "--rounds", "2", "--out", str(static), "--json", *sets,
        )  # fmt: skip
        ladders += ["--ladder", str(static)]
    rows = []
    for workload in WORKLOADS:
        saved = out / f"{workload.stem}.slo.json"
        cli("plan", "--workload", str(workload), "--predict-slo", *ladders, "--save", str(saved), "--json", *sets)
        run = out / f"measured-{workload.stem}"
        args = ["bench", "workload", "--workload", str(workload), "--predicted", str(saved), "--out", str(run)]
        measured = json.loads(cli(*args, "--json", *sets))
        rows += [(workload.stem, n) for n in measured["slo"]["numbers"]]
    print(f"evidence: {out}")
    print(f"{'workload':<10} {'number':<32} {'predicted':>10} {'measured':>10} {'error':>8}  within {TARGET:.0%}")
    for name, n in rows:
        error = "–" if n["error"] is None else f"{n['error']:+.1%}"
        within = {True: "yes", False: "NO", None: "–"}[n["within_target"]]
        print(f"{name:<10} {n['name']:<32} {n['predicted']:>10.3f} {n['measured'] or 0:>10.3f} {error:>8}  {within}")


if __name__ == "__main__":
    main()
