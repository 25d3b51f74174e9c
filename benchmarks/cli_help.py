"""Benchmark: ``hma-check --help`` start-up (goal: under 200 ms), against an empty interpreter and ``import click``.

Also lists any heavy package the help path imported (msgraph, azure, httpx, pypsrp, jinja2...): there must be none.

    python benchmarks/cli_help.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

GOAL_MS = 200.0
HEAVY = ("msgraph", "msgraph_core", "kiota_http", "azure", "msal", "httpx", "pypsrp", "psrpcore", "jinja2", "yaml",
         "cryptography", "trustme")


def wall_ms(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    python = sys.executable
    cases = {
        "baseline_empty_interpreter": [python, "-c", "pass"],
        "baseline_import_click": [python, "-c", "import click"],
        # the floor of any click program's help: click imported, one command, its help formatted and printed
        "baseline_click_help": [python, "-c", "import click\n@click.command()\ndef f():\n    pass\nf(['--help'])"],
        "hma_check_help": [python, "-m", "hma_check", "--help"],
    }
    wall_ms(cases["hma_check_help"])  # warm the .pyc cache and the page cache
    medians = {name: statistics.median(wall_ms(argv) for _ in range(args.runs)) for name, argv in cases.items()}
    probe = ("import runpy, sys\nsys.argv = ['hma-check', '--help']\ntry:\n    runpy.run_module('hma_check', "
             "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('\\n' + ' '.join(sorted({m.split('.')[0] "
             "for m in sys.modules})))")
    loaded = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout
    heavy = sorted(set(loaded.strip().splitlines()[-1].split()) & set(HEAVY))
    report = {"benchmark": "cli_help", "runs": args.runs, **{f"{k}_ms": round(v, 1) for k, v in medians.items()},
              "overhead_over_click_ms": round(medians["hma_check_help"] - medians["baseline_import_click"], 1),
              "ratio_to_import_click": round(medians["hma_check_help"] / medians["baseline_import_click"], 2),
              "ratio_to_click_help": round(medians["hma_check_help"] / medians["baseline_click_help"], 2),
              "heavy_modules_imported": heavy, "goal_ms": GOAL_MS}
    report["pass"] = medians["hma_check_help"] < GOAL_MS and not heavy
    print(json.dumps(report, indent=1))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
