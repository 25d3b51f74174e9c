"""Benchmark: OS facts of the 200-server lab over WinRM (goal: under 30 s wall, under 300 MB peak RSS, fan-out pays).

The lab (one WinRM listener per server) runs in its own process and answers each cmdlet after 50 ms, a WinRM round
trip to a server across a network (with no latency at all both processes compete for the same two cores and the
measurement is of CPU, not of the collector's fan-out). A fresh interpreter reads every os.* source of every
server through pypsrp (NTLM with message encryption, one session per server) at the default concurrency of 8.
Baseline measured in the same run: the same collector one server at a time on the first 40 servers, scaled to 200;
the fan-out must beat it by at least 1.5x.

    python benchmarks/os_fanout.py [--servers 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time

GOAL_WALL_S = 30.0
GOAL_RSS_MB = 300.0
GOAL_SPEEDUP = 1.5
SEQUENTIAL_SAMPLE = 40

LATENCY = "50ms"
LAB = textwrap.dedent("""
    import json, sys, tempfile, pathlib
    from hma_lab.runtime import Lab
    scenario = pathlib.Path(tempfile.mkdtemp()) / "os-bench.yaml"
    scenario.write_text("extends: large\\nname: os-bench\\nlatency: {default: %s}\\n" % sys.argv[1])
    with Lab(scenario) as lab:
        servers = [{"Name": s.name, "Fqdn": s.fqdn, "IsEdgeServer": False} for s in lab.scenario.servers]
        print(json.dumps({"os": lab.scan_config()["os"], "password": lab.credentials.password, "servers": servers,
                          "thumbprint": lab.certificates.get("auth").thumbprint}), flush=True)
        sys.stdin.read()
""")

COLLECT = textwrap.dedent("""
    import json, resource, sys, time
    from dataclasses import replace
    t0 = time.perf_counter()
    import yaml
    from hma_check.collect.os.collector import collect_os
    from hma_check.collect.config import load_config_text
    from hma_check.contract.snapshot import Snapshot, SourceResult
    lab, count, concurrency = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    settings = replace(load_config_text(yaml.safe_dump({"os": lab["os"]})).sections["os"], concurrency=concurrency)
    snapshot = Snapshot.new()
    snapshot.add(SourceResult.ok_result("exchange.servers", lab["servers"][:count], command="bench"))
    snapshot.add(SourceResult.ok_result("exchange.auth_config", {"CurrentCertificateThumbprint": lab["thumbprint"]},
                                        command="bench"))
    t1 = time.perf_counter()
    results = collect_os(settings, lab["password"], snapshot)
    print(json.dumps({"inner_s": time.perf_counter() - t0, "collect_s": time.perf_counter() - t1,
                      "ok": sum(r.ok for r in results), "sources": len(results),
                      "errors": [r.error for r in results if not r.ok][:3],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def child(code: str, *args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=200)
    args = parser.parse_args()
    lab_process = subprocess.Popen([sys.executable, "-c", LAB, LATENCY], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
    try:
        lab = json.dumps(json.loads(lab_process.stdout.readline()))
        sample = min(SEQUENTIAL_SAMPLE, args.servers)
        _, sequential = child(COLLECT, lab, str(sample), "1")
        wall, fanout = child(COLLECT, lab, str(args.servers), "8")
    finally:
        lab_process.stdin.close()
        lab_process.wait(timeout=30)
    from hma_check.collect.os.collector import SOURCES   # every os.* source, once per server (six since issue 11)

    for run, count in ((sequential, sample), (fanout, args.servers)):
        if run["ok"] != len(SOURCES) * count or run["errors"]:
            print(f"FAILED: collection incomplete: {run}")
            return 1
    sequential_estimate = sequential["collect_s"] * args.servers / sample
    report = {
        "benchmark": "os_fanout", "servers": args.servers, "calls": args.servers * 6,
        "collector_wall_s": round(wall, 2), "collect_s": round(fanout["collect_s"], 2),
        "collector_peak_rss_mb": round(fanout["rss_mb"], 1),
        "baseline_sequential_s_scaled": round(sequential_estimate, 2),
        "speedup": round(sequential_estimate / fanout["collect_s"], 2),
        "goal_wall_s": GOAL_WALL_S, "goal_rss_mb": GOAL_RSS_MB, "goal_speedup": GOAL_SPEEDUP,
    }
    report["pass"] = (wall < GOAL_WALL_S and fanout["rss_mb"] < GOAL_RSS_MB and report["speedup"] >= GOAL_SPEEDUP)
    print(json.dumps(report, indent=1))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
