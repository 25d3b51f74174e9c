"""Run every benchmark in this folder (each a script that prints JSON and exits non-zero when it misses its goal)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(p for p in here.glob("*.py") if p.name != "run.py"):
        print(f"== {script.stem}", flush=True)
        if subprocess.run([sys.executable, str(script)], cwd=here.parent).returncode != 0:
            failed.append(script.stem)
    print(f"benchmarks missing their goal: {', '.join(failed)}" if failed else "all benchmarks met their goals")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
