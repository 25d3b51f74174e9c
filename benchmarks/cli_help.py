"""Benchmark: ``hma-check --help`` start-up (goals: under 200 ms, and at most 1.2x ``import click``, issue 18).

``hma-check`` is the console script pip installs (pyproject [project.scripts]): a wrapper that imports
hma_check.cli and calls main(). It is timed as that wrapper runs, and ``python -m hma_check --help`` beside it
(runpy's extra imports). Baselines: an empty interpreter, ``import click``, and a one-command click program printing
its help, the floor any click program pays. Each round runs every case once, in turn, so a change of load on a
shared machine slows all of them alike; the medians are compared. Every process reads compiled bytecode from a
private cache filled by an untimed run, as an installed hma-check (pip compiles it) and the installed click do,
even where the environment sets PYTHONDONTWRITEBYTECODE. Also lists any heavy package the help path imported
(msgraph, azure, httpx, pypsrp, jinja2...): there must be none.

    python benchmarks/cli_help.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_MS = 200.0
GOAL_RATIO = 1.2   # hma-check --help / import click, medians (issue 18)
HEAVY = ("msgraph", "msgraph_core", "kiota_http", "azure", "msal", "httpx", "pypsrp", "psrpcore", "jinja2", "yaml",
         "cryptography", "trustme")
# What pip writes into bin/hma-check for [project.scripts] hma-check = "hma_check.cli:main", run with -c so that this
# checkout's hma_check is the one imported (the working directory comes first on sys.path).
CONSOLE_SCRIPT = ("import sys\nfrom hma_check.cli import main\nif __name__ == '__main__':\n"
                  "    sys.argv[0] = 'hma-check'\n    sys.exit(main())")


def timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, env=env, cwd=cwd)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    python = sys.executable
    root = str(Path(__file__).resolve().parents[1])
    pycache = tempfile.mkdtemp(prefix="hma-check-bench-pycache-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = pycache
    cases = {
        "baseline_empty_interpreter": [python, "-c", "pass"],
        "baseline_import_click": [python, "-c", "import click"],
        # the floor of any click program's help: click imported, one command, its help formatted and printed
        "baseline_click_help": [python, "-c", "import click\n@click.command()\ndef f():\n    pass\nf(['--help'])"],
        "hma_check_help": [python, "-c", CONSOLE_SCRIPT, "--help"],
        "python_m_hma_check_help": [python, "-m", "hma_check", "--help"],
    }
    load_before = os.getloadavg()
    try:
        for argv in cases.values():
            timed(argv, env, root)   # fill the bytecode cache, warm the page cache
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, argv in cases.items():
                runs[name].append(timed(argv, env, root))
        probe = ("import runpy, sys\nsys.argv = ['hma-check', '--help']\ntry:\n    runpy.run_module('hma_check', "
                 "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('\\n' + ' '.join(sorted({m.split('.')[0] "
                 "for m in sys.modules})))")
        loaded = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True, env=env,
                                cwd=root).stdout
    finally:
        shutil.rmtree(pycache, ignore_errors=True)
    heavy = sorted(set(loaded.strip().splitlines()[-1].split()) & set(HEAVY))
    wall = {name: statistics.median(w for w, _ in r) for name, r in runs.items()}
    cpu = {name: statistics.median(c for _, c in r) for name, r in runs.items()}
    report = {"benchmark": "cli_help", "runs": args.runs,
              "load_average_before_after": [round(x, 1) for x in load_before + os.getloadavg()],
              **{f"{k}_ms": round(v, 1) for k, v in wall.items()},
              "overhead_over_click_ms": round(wall["hma_check_help"] - wall["baseline_import_click"], 1),
              "ratio_to_import_click": round(wall["hma_check_help"] / wall["baseline_import_click"], 2),
              "ratio_to_click_help": round(wall["hma_check_help"] / wall["baseline_click_help"], 2),
              "python_m_ratio_to_import_click": round(wall["python_m_hma_check_help"]
                                                      / wall["baseline_import_click"], 2),
              "cpu_ms": {k: round(v, 1) for k, v in cpu.items()},
              "cpu_ratio_to_import_click": round(cpu["hma_check_help"] / cpu["baseline_import_click"], 2),
              "heavy_modules_imported": heavy, "goal_ms": GOAL_MS, "goal_ratio": GOAL_RATIO}
    report["pass"] = (wall["hma_check_help"] < GOAL_MS and not heavy
                      and wall["hma_check_help"] <= GOAL_RATIO * wall["baseline_import_click"])
    print(json.dumps(report, indent=1))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
