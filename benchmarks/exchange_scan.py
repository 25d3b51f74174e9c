"""Benchmark: Exchange scan wall time against the lab with 150 ms per per-server cmdlet, versus --concurrency 1 and
versus the floor (total per-server work divided by the allowed concurrency); peak RSS of the scanning process.

Run: .venv/bin/python benchmarks/exchange_scan.py [--sizes 1,10,50,200] [--sequential-sizes 1,10,50]
Each scan runs in its own process (so its peak RSS is its own) against a lab in another process (its own
interpreter lock, as a real server would be). Goals: at 50 servers within 1.3x the floor and at least 8x faster
than sequential; peak RSS under 300 MB at 200 servers. Prints one JSON line per scan and exits 1 on a missed goal.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LATENCY = 0.150
PER_SERVER_CMDLETS = 9      # eight virtual directory cmdlets and Get-ExchangeCertificate, per server
SCENARIO = """\
extends: ready
name: bench-{servers}
latency: {{per_server: {latency}s}}
hybrid_configuration: {{ReceivingTransportServers: [EX001], SendingTransportServers: [EX001]}}
servers:
  - {{name: "EX{{n:03}}", count: {servers}}}
"""


def scan_once(info_json: str, concurrency: int) -> None:
    """Child mode: scan the lab described by ``info_json`` and print wall time, CPU time and peak RSS."""
    import yaml

    from hma_check.collect.runner import run_collectors
    from hma_check.collect.config import load_config_text

    info = json.loads(info_json)
    exchange = dict(info["scan_config"]["exchange"], concurrency=concurrency)
    config = load_config_text(yaml.safe_dump({"exchange": exchange}))   # the Exchange collector alone
    started, cpu = time.perf_counter(), time.process_time()
    snapshot = run_collectors(config, secrets={"exchange.password": info["password"]}, environ={})
    wall = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for result in snapshot.sources.values():
        statuses[result.status] = statuses.get(result.status, 0) + 1
    print(json.dumps({"wall": wall, "cpu": time.process_time() - cpu, "statuses": statuses,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(servers: int, concurrency: int, folder: Path) -> dict:
    path = folder / f"bench-{servers}.yaml"
    path.write_text(SCENARIO.format(servers=servers, latency=LATENCY), encoding="utf-8")
    lab = subprocess.Popen([sys.executable, "-m", "hma_lab.serve", "--scenario-file", str(path)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        info = lab.stdout.readline()  # type: ignore[union-attr]
        child = subprocess.run([sys.executable, __file__, "--child", info, "--concurrency", str(concurrency)],
                               capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        lab.stdin.close()  # type: ignore[union-attr]
        lab.wait(timeout=60)
    floor = servers * PER_SERVER_CMDLETS * LATENCY / concurrency
    result.update(servers=servers, concurrency=concurrency, floor=floor, ratio_to_floor=result["wall"] / floor)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,10,50,200")
    parser.add_argument("--sequential-sizes", default="1,10,50")   # 200 in a row takes five minutes
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        scan_once(args.child, args.concurrency)
        return 0
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        parallel = {n: measure(n, args.concurrency, folder) for n in map(int, args.sizes.split(","))}
        sequential = {n: measure(n, 1, folder) for n in map(int, args.sequential_sizes.split(",")) if n}
    for n, result in parallel.items():
        if n in sequential:
            result["speedup_vs_sequential"] = sequential[n]["wall"] / result["wall"]
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
        if result["statuses"].get("error"):
            failures.append(f"{n} servers: {result['statuses']['error']} sources failed")
    for result in sequential.values():
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}))
    if 50 in parallel:
        if parallel[50]["ratio_to_floor"] > 1.3:
            failures.append(f"50 servers: {parallel[50]['ratio_to_floor']:.2f}x the floor (goal 1.3)")
        if parallel[50].get("speedup_vs_sequential", 8) < 8:
            failures.append(f"50 servers: only {parallel[50]['speedup_vs_sequential']:.1f}x sequential (goal 8)")
    if 200 in parallel and parallel[200]["peak_rss_mb"] >= 300:
        failures.append(f"200 servers: peak RSS {parallel[200]['peak_rss_mb']:.0f} MB (goal < 300)")
    print("goals missed: " + "; ".join(failures) if failures else "all goals met")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
