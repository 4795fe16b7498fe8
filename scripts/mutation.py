"""Mutation testing of the critical modules: how many planted bugs do the fast tests catch?

mutmut (pinned below) plants small bugs (a flipped comparison, an off-by-one, a dropped call, a
changed constant) one at a time in the modules listed under [tool.mutmut] only_mutate in
pyproject.toml, and runs the fast tests that cover each one (`-m "not engine and not cluster and
not spawns"`). A mutant is killed when a test fails (or hangs past mutmut's budget), survives when
every test passes.

    python scripts/mutation.py                 run (resumes: mutmut keeps results in ./mutants)
    python scripts/mutation.py --fresh         forget earlier results first
    python scripts/mutation.py --report-only   only tabulate ./mutants
    python scripts/mutation.py --survivors     re-check only the mutants that survived (after new tests)
    python scripts/mutation.py --min 0.9       exit 1 when the overall kill rate is below 90 %

It prints a per-module table (Markdown) and writes mutants/kill-rate.json. `mutmut results` then
lists the survivors and `mutmut show NAME` shows one as a diff. Expect 20-40 minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

MUTMUT = "mutmut==3.8.1"
ROOT = Path(__file__).resolve().parent.parent
# mutmut's exit codes for a checked mutant (mutmut/stats.py); a timeout is a detected mutant.
DETECTED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"}
SURVIVED = {0: "survived", 33: "no tests", 5: "no tests"}


def ensure_mutmut() -> Path:
    binary = Path(sys.executable).parent / "mutmut"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", MUTMUT], check=True)
    return binary


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def survivors() -> list[str]:
    """Mutants that survived or had no test: mutmut keeps a result once it has one, so new tests are
    judged against these only when they are named again."""
    names = []
    for module in modules():
        meta = ROOT / "mutants" / f"{module}.meta"
        if meta.exists():
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            names += [name for name, code in codes.items() if code in SURVIVED]
    return names


def tabulate() -> dict[str, dict[str, object]]:
    table: dict[str, dict[str, object]] = {}
    for module in modules():
        meta = ROOT / "mutants" / f"{module}.meta"
        codes = json.loads(meta.read_text())["exit_code_by_key"].values() if meta.exists() else []
        outcome = Counter(
            DETECTED.get(c) or SURVIVED.get(c) or ("not checked" if c is None else "other") for c in codes
        )
        checked = sum(n for status, n in outcome.items() if status != "not checked")
        detected = outcome["killed"] + outcome["timeout"]
        table[module] = {
            **dict(outcome),
            "mutants": len(list(codes)),
            "checked": checked,
            "kill_rate": round(detected / checked, 4) if checked else None,
        }
    checked = sum(int(row["checked"]) for row in table.values())  # type: ignore[call-overload]
    detected = sum(int(row.get("killed", 0)) + int(row.get("timeout", 0)) for row in table.values())  # type: ignore[call-overload]
    table["total"] = {
        "checked": checked,
        "detected": detected,
        "kill_rate": round(detected / checked, 4) if checked else None,
    }
    return table


def markdown(table: dict[str, dict[str, object]]) -> str:
    lines = [
        "| module | mutants | killed | timeout | survived | no tests | kill rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for module, row in table.items():
        if module == "total":
            continue
        rate = row["kill_rate"]
        lines.append(
            f"| {module.removeprefix('src/flashspark/')} | {row['mutants']} | {row.get('killed', 0)} | "
            f"{row.get('timeout', 0)} | {row.get('survived', 0)} | {row.get('no tests', 0)} | "
            + (f"{rate:.1%}" if isinstance(rate, float) else "-")
            + " |"
        )
    total = table["total"]
    rate = total["kill_rate"]
    lines.append(
        f"| **all** | {total['checked']} | {total['detected']} detected | | | | "
        + (f"**{rate:.1%}**" if isinstance(rate, float) else "-")
        + " |"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh", action="store_true", help="remove ./mutants (earlier results) first")
    parser.add_argument("--report-only", action="store_true", help="tabulate the results in ./mutants")
    parser.add_argument("--survivors", action="store_true", help="re-check the survivors of an earlier run")
    parser.add_argument("--min", type=float, default=None, help="fail below this overall kill rate (0-1)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    os.chdir(ROOT)
    if not args.report_only:
        if args.fresh:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        mutmut = ensure_mutmut()
        # mutmut's exit status says nothing about the kill rate; the table below does.
        names = survivors() if args.survivors else []
        if args.survivors and not names:
            print("no survivors to re-check", file=sys.stderr)  # noqa: T201
        else:
            subprocess.run([str(mutmut), "run", "--max-children", str(args.jobs), *names], check=False)
    table = tabulate()
    if not table["total"]["checked"]:
        print("no mutant was checked: read mutmut's output above (a failing clean run stops it)", file=sys.stderr)  # noqa: T201
        return 2
    (ROOT / "mutants").mkdir(exist_ok=True)
    (ROOT / "mutants" / "kill-rate.json").write_text(json.dumps(table, indent=2) + "\n")
    print(markdown(table))  # noqa: T201 - the script's output
    rate = table["total"]["kill_rate"]
    if args.min is not None and (not isinstance(rate, float) or rate < args.min):
        print(f"kill rate {rate} is below {args.min}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
