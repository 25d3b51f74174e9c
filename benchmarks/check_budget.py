"""Benchmark: how much of the evaluation budget (hma_check.evaluate.budget) the shipped checks use.

Every expression and template of checks.yaml and validation.yaml is evaluated against the evidence of a 200-server,
50,000-user organisation (the report_pipeline benchmark's), and against the 2-server baseline; for each limit the
largest use by any one evaluation is printed with the expression that used it. Goal: no shipped check uses more than
10 % of any limit (operations, size, output, time), so a real organisation never meets the budget.
Run: .venv/bin/python benchmarks/check_budget.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report_pipeline import build_evidence  # noqa: E402

from hma_check.commands.pipeline import load_all_checks  # noqa: E402
from hma_check.contract.snapshot import load_snapshot  # noqa: E402
from hma_check.evaluate import budget  # noqa: E402
from hma_check.evaluate.engine import evaluate  # noqa: E402
from tests.support import baseline  # noqa: E402

GOAL = 0.10


def measure(snapshot) -> dict:
    peaks = {"operations": (0, ""), "largest": (0, ""), "output": (0, ""), "seconds": (0.0, "")}

    def record(used: budget.Budget, source: str) -> None:
        import time

        for key, value in (("operations", used.operations), ("largest", used.largest), ("output", used.output),
                           ("seconds", time.monotonic() - used.started)):
            if value > peaks[key][0]:
                peaks[key] = (value, " ".join(source.split())[:100])

    with budget.observe(record):
        for validation in (False, True):
            evaluate(load_all_checks(validation=validation), snapshot)
    return peaks


def main() -> int:
    limits = {"operations": budget.MAX_OPERATIONS, "largest": budget.MAX_LENGTH, "output": budget.MAX_LENGTH,
              "seconds": budget.MAX_SECONDS}
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, snapshot in (("baseline (2 servers)", baseline.build()),
                                ("200 servers, 50,000 users", load_snapshot(build_evidence(Path(tmp))))):
            peaks = measure(snapshot)
            for key, (value, source) in peaks.items():
                share = value / limits[key]
                worst = max(worst, share)
                print(json.dumps({"evidence": label, "limit": key, "max_used": round(value, 3),
                                  "budget": limits[key], "share": round(share, 5), "by": source}))
    print(json.dumps({"worst_share": round(worst, 5), "goal": GOAL, "met": worst <= GOAL}))
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
