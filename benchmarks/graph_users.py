"""Benchmark: Graph collection of a 50,000-user tenant from the lab (goal, issue 18: at most 1.5x plain httpx).

The lab runs in its own process, so the numbers are the collector's alone: a fresh interpreter that imports
hma-check, signs in with a client secret over verified TLS, reads all seven graph.* sources (the users in 51
pages) and builds the evidence snapshot. The baseline is the same users pages fetched from the same lab endpoint
with plain httpx and json (the floor any Graph client pays here), each in a fresh interpreter too. The two
alternate, --runs times each, and the medians are compared: other work on a shared machine then slows both.
Also recorded: an empty interpreter, peak RSS (goal under 400 MB), and with --also DIR the collector of another
source tree (e.g. a checkout of main) in the same alternation, for before/after figures.

    python benchmarks/graph_users.py [--users 50000] [--runs 5] [--also DIR]
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
import textwrap
import time

TENANT = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"
GOAL_RATIO = 1.5   # collector wall time / plain httpx's, medians (issue 18)
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
    import hma_check
    print(json.dumps({"inner_s": time.perf_counter() - t0, "source": hma_check.__path__[0],
                      "users": len(users.data or []), "status": users.status,
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


def cpu_of(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def timed_child(code: str, *args: str, env: dict[str, str] | None = None, lab_pid: int | None = None,
                cwd: str | None = None) -> tuple[float, dict]:
    """Wall time of a fresh interpreter running ``code``, and its last stdout line (JSON) with the child's own CPU
    seconds (``cpu_s``) and, given the lab's pid, the CPU the lab spent meanwhile (``lab_cpu_s``)."""
    lab_before = cpu_of(lab_pid) if lab_pid else 0.0
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True,
                         cwd=cwd)
    wall = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    result["cpu_s"] = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    if lab_pid:
        result["lab_cpu_s"] = cpu_of(lab_pid) - lab_before
    return wall, result


def cpu_medians(side: str, runs: list[tuple[float, dict]]) -> dict[str, float]:
    """Median CPU seconds of one side's own process and of the lab serving it (steadier than wall time)."""
    return {f"{side}_cpu_s": round(statistics.median(r["cpu_s"] for _, r in runs), 2),
            f"{side}_lab_cpu_s": round(statistics.median(r.get("lab_cpu_s", 0.0) for _, r in runs), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5, help="runs of each side, alternating (default 5)")
    parser.add_argument("--also", metavar="DIR", help="also time the collector of this source tree (before/after)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    # Every process reads compiled bytecode, as an installed hma-check does (pip compiles it), even where the
    # environment says PYTHONDONTWRITEBYTECODE: a private cache, filled by one untimed run of each side.
    pycache = tempfile.mkdtemp(prefix="hma-check-bench-pycache-")
    base_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base_env["PYTHONPYCACHEPREFIX"] = pycache
    lab_process = subprocess.Popen([sys.executable, "-c", LAB, TENANT, str(args.users)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, env=base_env)
    try:
        lab = json.loads(lab_process.stdout.readline())
        env = dict(base_env, BENCH_SECRET=lab.pop("secret"))
        secret_lab = dict(lab, secret=env["BENCH_SECRET"])
        also_env, also_cwd = None, None
        if args.also:
            also_env = dict(env, PYTHONPATH=os.pathsep.join([os.path.abspath(args.also)] + [
                p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]))
            # `python -c` puts the working directory first on sys.path: run the other tree's collector from there.
            also_cwd = os.path.abspath(args.also)
        empty = [timed_child("print('{}')", env=base_env)[0] for _ in range(3)]
        timed_child(HTTPX_FLOOR, json.dumps(secret_lab), TENANT, env=base_env)   # warm-up: bytecode, page cache
        timed_child(COLLECT, json.dumps(lab), TENANT, env=env)
        if also_env is not None:
            timed_child(COLLECT, json.dumps(lab), TENANT, env=also_env, cwd=also_cwd)
        floors, runs, also = [], [], []
        for _ in range(args.runs):
            floors.append(timed_child(HTTPX_FLOOR, json.dumps(secret_lab), TENANT, env=base_env,
                                      lab_pid=lab_process.pid))
            runs.append(timed_child(COLLECT, json.dumps(lab), TENANT, env=env, lab_pid=lab_process.pid))
            if also_env is not None:
                also.append(timed_child(COLLECT, json.dumps(lab), TENANT, env=also_env, lab_pid=lab_process.pid,
                                        cwd=also_cwd))
    finally:
        lab_process.stdin.close()
        lab_process.wait(timeout=10)
        shutil.rmtree(pycache, ignore_errors=True)

    for _, result in runs + also:
        if result["status"] != "ok" or result["users"] != args.users or result["errors"]:
            print(f"FAILED: collection incomplete: {result}")
            return 1
    wall = statistics.median(w for w, _ in runs)
    floor = statistics.median(w for w, _ in floors)
    rss = max(r["rss_mb"] for _, r in runs)
    report = {
        "benchmark": "graph_users", "users": args.users, "runs": args.runs,
        "load_average_before_after": [round(x, 1) for x in load_before + os.getloadavg()],
        "collector_source": runs[0][1]["source"],
        "collector_wall_s": round(wall, 2), "collector_peak_rss_mb": round(rss, 1),
        "collector_inner_s": round(statistics.median(r["inner_s"] for _, r in runs), 2),
        "evidence_mb": round(runs[0][1]["evidence_mb"], 1),
        "baseline_empty_interpreter_s": round(statistics.median(empty), 3),
        "baseline_httpx_users_only_s": round(floor, 2),
        "baseline_httpx_users_only_rss_mb": round(max(r["rss_mb"] for _, r in floors), 1),
        "ratio": round(wall / floor, 2),
        "collector_walls_s": [round(w, 2) for w, _ in runs],
        "baseline_walls_s": [round(w, 2) for w, _ in floors],
        **cpu_medians("collector", runs), **cpu_medians("baseline", floors),
        "goal_ratio": GOAL_RATIO, "goal_rss_mb": GOAL_RSS_MB,
    }
    if also:
        also_wall = statistics.median(w for w, _ in also)
        report.update(also_source=also[0][1]["source"], also_wall_s=round(also_wall, 2),
                      also_ratio=round(also_wall / floor, 2), also_walls_s=[round(w, 2) for w, _ in also],
                      **cpu_medians("also", also))
    report["pass"] = wall <= GOAL_RATIO * floor and rss < GOAL_RSS_MB
    print("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in report.items()) + "\n}")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
