"""Benchmark: the `large` scenario (200 servers) with one server hung, against the same scan healthy.

A hung server accepts every call and never answers: the lab's fault `{cmdlet: '*', server: EX150, hang: true}` holds
every Exchange cmdlet that names EX150 (-Server EX150) and every WinRM call to EX150. The scan (every section of the
demo configuration: Exchange, OS, Graph, probes) runs in its own process against a lab in another, with the Exchange
and OS timeouts both set to TIMEOUT seconds.
Goal (issue 13): the hung scan within 1.5x the healthy scan plus one timeout. Before, each of EX150's OS reads waited
out its own timeout after the Exchange one (364 s with the default timeouts of 120 s and 60 s).
Run: .venv/bin/python benchmarks/hung_server.py [--timeout 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIO = """\
extends: {base}
name: {base}-one-hung
expect: {{}}
faults:
  - {{cmdlet: '*', server: {server}, hang: true}}
"""


def scan_once(info_json: str, timeout: int, server: str) -> None:
    """Child mode: scan the lab described by ``info_json``; print wall time and how the sources came back."""
    import yaml

    from hma_check.collect.config import load_config_text
    from hma_check.collect.runner import run_collectors

    info = json.loads(info_json)
    raw = info["scan_config"]
    raw["exchange"]["timeout"] = timeout
    raw.setdefault("os", {})["timeout"] = timeout
    config = load_config_text(yaml.safe_dump(raw))
    started = time.perf_counter()
    snapshot = run_collectors(config, secrets=info["secrets"], environ={})
    wall = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for result in snapshot.sources.values():
        statuses[result.status] = statuses.get(result.status, 0) + 1
    hung = {r.key: r.error for r in snapshot.sources.values() if r.scope == server and r.status == "error"}
    print(json.dumps({"wall": wall, "statuses": statuses, "hung_errors": len(hung),
                      "timed_out": sum("the call was stopped" in (e or "") for e in hung.values())}))


def measure(scenario: list[str], timeout: int, server: str) -> dict:
    lab = subprocess.Popen([sys.executable, "-m", "hma_lab.serve", *scenario], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        info = lab.stdout.readline()  # type: ignore[union-attr]
        child = subprocess.run([sys.executable, __file__, "--child", info, "--timeout", str(timeout),
                                "--server", server], capture_output=True, text=True, check=True)
        return json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        lab.stdin.close()  # type: ignore[union-attr]
        lab.wait(timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=int, default=30)
    parser.add_argument("--scenario", default="large", help="the shipped scenario to scan (smoke runs: ready)")
    parser.add_argument("--server", default="EX150", help="the server that hangs")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        scan_once(args.child, args.timeout, args.server)
        return 0
    load = os.getloadavg()
    healthy = measure(["--scenario", args.scenario], args.timeout, args.server)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one-hung.yaml"
        path.write_text(SCENARIO.format(base=args.scenario, server=args.server), encoding="utf-8")
        hung = measure(["--scenario-file", str(path)], args.timeout, args.server)
    goal = 1.5 * healthy["wall"] + args.timeout
    result = {"scenario": args.scenario, "hung_server": args.server, "timeout_s": args.timeout, "healthy_s": round(healthy["wall"], 2), "hung_s": round(hung["wall"], 2),
              "goal_s": round(goal, 2), "met": hung["wall"] <= goal, "healthy": healthy["statuses"],
              "hung": hung["statuses"], "hung_server_errors": hung["hung_errors"],
              "calls_timed_out": hung["timed_out"], "load_average_before": [round(x, 1) for x in load],
              "load_average_after": [round(x, 1) for x in os.getloadavg()]}
    print(json.dumps(result))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
