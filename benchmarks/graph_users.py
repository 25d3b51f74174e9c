"""Benchmark: Graph collection of a 50,000-user tenant from the lab (goal: under 10 s wall, under 400 MB peak RSS).

The lab runs in its own process, so the numbers are the collector's alone: a fresh interpreter that imports
hma-check, signs in with a client secret over verified TLS, reads all seven graph.* sources (the users in 51
pages) and builds the evidence snapshot. Baselines measured in the same run: an empty interpreter, and the same
pages fetched with plain httpx and json (the floor any Graph client pays here).

    python benchmarks/graph_users.py [--users 50000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

TENANT = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"
GOAL_WALL_S = 10.0
GOAL_RSS_MB = 400.0

LAB = textwrap.dedent("""
    import json, sys
    from hma_lab.graph_service import GraphService
    from hma_lab.tenants import load_tenants
    tenants = load_tenants([{"id": sys.argv[1], "display_name": "Bench", "initial_domain": "bench.onmicrosoft.com",
                             "domains": [{"id": "bench.onmicrosoft.com"}, {"id": "bench.com", "isDefault": True}],
                             "generate_users": {"count": int(sys.argv[2])}}])
    with GraphService(tenants) as lab:
        print(json.dumps({"authority": lab.authority, "graph_url": lab.graph_url, "ca": str(lab.ca_path),
                          "client_id": lab.client_id(sys.argv[1]), "secret": lab.secret(sys.argv[1])}), flush=True)
        sys.stdin.read()
""")

COLLECT = textwrap.dedent("""
    import json, resource, sys, time
    t0 = time.perf_counter()
    from hma_check.collect.graph.collector import collect_graph
    from hma_check.collect.graph.config import parse_graph_section
    from hma_check.contract.snapshot import Snapshot
    lab = json.loads(sys.argv[1])
    targets = parse_graph_section({"tenant_id": sys.argv[2], "client_id": lab["client_id"],
                                   "client_secret_env": "BENCH_SECRET", "authority": lab["authority"],
                                   "graph_url": lab["graph_url"], "ca_bundle": lab["ca"]})
    snapshot = Snapshot.new()
    for result in collect_graph(targets):
        snapshot.add(result)
    payload = snapshot.dumps()
    users = snapshot.sources["graph.users@" + sys.argv[2]]
    print(json.dumps({"inner_s": time.perf_counter() - t0, "users": len(users.data or []), "status": users.status,
                      "errors": [r.error for r in snapshot.sources.values() if r.status != "ok"],
                      "evidence_mb": len(payload) / 2**20,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

HTTPX_FLOOR = textwrap.dedent("""
    import json, resource, ssl, sys, time
    import httpx
    lab = json.loads(sys.argv[1])
    with httpx.Client(verify=ssl.create_default_context(cafile=lab["ca"])) as http:
        token = http.post(f"{lab['authority']}/{sys.argv[2]}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": lab["client_id"], "client_secret": lab["secret"],
            "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]
        url = lab["graph_url"] + "/users?$select=userPrincipalName,mail,onPremisesSyncEnabled,onPremisesSecurityIdentifier&$top=999"
        users = []
        while url:
            page = http.get(url, headers={"Authorization": "Bearer " + token}).json()
            users.extend(page["value"])
            url = page.get("@odata.nextLink")
    print(json.dumps({"users": len(users), "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def timed_child(code: str, *args: str, env: dict[str, str] | None = None) -> tuple[float, dict]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - started
    return wall, json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    lab_process = subprocess.Popen([sys.executable, "-c", LAB, TENANT, str(args.users)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
    try:
        lab = json.loads(lab_process.stdout.readline())
        env = dict(os.environ, BENCH_SECRET=lab.pop("secret"))
        secret_lab = dict(lab, secret=env["BENCH_SECRET"])
        empty = [timed_child("print('{}')")[0] for _ in range(args.runs)]
        floors = [timed_child(HTTPX_FLOOR, json.dumps(secret_lab), TENANT) for _ in range(args.runs)]
        runs = [timed_child(COLLECT, json.dumps(lab), TENANT, env=env) for _ in range(args.runs)]
    finally:
        lab_process.stdin.close()
        lab_process.wait(timeout=10)

    for _, result in runs:
        if result["status"] != "ok" or result["users"] != args.users or result["errors"]:
            print(f"FAILED: collection incomplete: {result}")
            return 1
    wall = statistics.median(w for w, _ in runs)
    rss = max(r["rss_mb"] for _, r in runs)
    report = {
        "benchmark": "graph_users", "users": args.users, "runs": args.runs,
        "collector_wall_s": round(wall, 2), "collector_peak_rss_mb": round(rss, 1),
        "collector_inner_s": round(statistics.median(r["inner_s"] for _, r in runs), 2),
        "evidence_mb": round(runs[0][1]["evidence_mb"], 1),
        "baseline_empty_interpreter_s": round(statistics.median(empty), 3),
        "baseline_httpx_users_only_s": round(statistics.median(w for w, _ in floors), 2),
        "baseline_httpx_users_only_rss_mb": round(max(r["rss_mb"] for _, r in floors), 1),
        "goal_wall_s": GOAL_WALL_S, "goal_rss_mb": GOAL_RSS_MB,
    }
    report["pass"] = wall < GOAL_WALL_S and rss < GOAL_RSS_MB
    print(json.dumps(report, indent=1))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
