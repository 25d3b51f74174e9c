"""Benchmark: saved evidence -> every output, for 200 servers and 50,000 mailbox users.

Each measurement runs in a fresh interpreter, as a real `hma-check report` does: first loading and validating the
evidence (the baseline: evaluation cannot be cheaper than reading the facts), then the whole report from the same
file, so each process's report is set against its own load, a second apart: a minute in which the shared machine
runs slower slows both (the ratio is the median of the per-process ratios). Two kinds of run alternate: **cold**, with
the compiled-code cache off (HMA_CHECK_CACHE_DIR=off: the catalogue and the report templates are compiled), and
**warm**, with a cache an earlier run filled (hma_check.util.code_cache, as every run after the first on a machine).
The 2-server baseline organisation's report is measured warm too (the fixed cost). Times are CPU seconds
(time.process_time) of the measuring process, so other work on the machine changes them less than wall time; wall
time is printed too.

Goals (issues 14 and 18): the warm report under 1 s CPU and within 5x loading the evidence; report.html under
1 MB; peak RSS under 400 MB.
Run: .venv/bin/python benchmarks/report_pipeline.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # the tests.support helpers

SERVERS, USERS = 200, 50_000


def build_small(folder: Path) -> Path:
    from tests.support import baseline

    path = folder / "small.json"
    baseline.build().save(path)
    return path


def build_evidence(folder: Path) -> Path:
    from tests.support import baseline

    snapshot = baseline.build(server_names=tuple(f"EX{i:03d}" for i in range(1, SERVERS + 1)))
    users = snapshot.sources[f"graph.users@{baseline.TENANT}"].data
    mailboxes = snapshot.sources["exchange.mailboxes"].data
    for i in range(USERS):
        upn = f"user{i:05d}@contoso.com"
        sid = f"S-1-5-21-1004336348-1177238915-682003330-{20000 + i}"
        users.append({"userPrincipalName": upn, "mail": upn, "onPremisesSyncEnabled": True,
                      "onPremisesSecurityIdentifier": sid})
        # Sid, as Get-Mailbox returns it: HMA-ID-003 matches every mailbox to its Entra ID user by it
        mailboxes.append({"Name": f"User {i}", "UserPrincipalName": upn, "PrimarySmtpAddress": upn,
                          "RecipientTypeDetails": "UserMailbox", "Sid": sid})
    path = folder / "evidence.json"
    snapshot.save(path)
    return path


def child(evidence: Path, out: Path) -> None:
    """One fresh process: load the evidence, then the whole report; print the CPU and wall seconds of each."""
    from hma_check.commands.pipeline import run_report
    from hma_check.contract.snapshot import load_snapshot

    cpu, wall = time.process_time(), time.perf_counter()
    load_snapshot(evidence)
    load_cpu, load_wall = time.process_time() - cpu, time.perf_counter() - wall
    cpu, wall = time.process_time(), time.perf_counter()
    run_report(evidence, out)
    print(json.dumps({"load": load_cpu, "load_wall": load_wall, "full": time.process_time() - cpu,
                      "full_wall": time.perf_counter() - wall,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "html_mb": (out / "report.html").stat().st_size / 1e6}))


def run_child(evidence: Path, out: Path, cache: str) -> dict[str, float]:
    env = dict(os.environ, HMA_CHECK_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, __file__, "--child", str(evidence), str(out)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=2, type=Path)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp), str(Path(tmp) / "cache")
        small, evidence = build_small(folder), build_evidence(folder)
        size_mb = evidence.stat().st_size / 1e6
        run_child(evidence, folder / "prime", cache)        # fills the cache, as a first run on a machine does
        cold, warm, fixed = [], [], []
        for _ in range(args.rounds):
            cold.append(run_child(evidence, folder / "cold", "off"))
            warm.append(run_child(evidence, folder / "warm", cache))
            fixed.append(run_child(small, folder / "small", cache))

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    def ratio(runs: list[dict[str, float]]) -> float:
        """The report against the load in the same process, median over the processes."""
        return statistics.median(run["full"] / run["load"] for run in runs)

    load = median(cold + warm, "load")
    print(f"evidence: {SERVERS} servers, {USERS} users, {size_mb:.1f} MB; report.html {median(warm, 'html_mb'):.2f} MB; "
          f"medians of {args.rounds} fresh processes each, CPU seconds (wall in brackets)")
    print(f"baseline: loading the evidence {load:.2f} s ({median(cold + warm, 'load_wall'):.2f} s)")
    for label, runs in (("cold (cache off)", cold), ("warm (cache filled)", warm)):
        full = median(runs, "full")
        each = ", ".join(f"{run['full']:.2f} s = {run['full'] / run['load']:.1f}x" for run in runs)
        print(f"whole report, {label}: {full:.2f} s ({median(runs, 'full_wall'):.2f} s) = {ratio(runs):.1f}x the load "
              f"in the same process (each: {each}); peak RSS {max(run['rss_mb'] for run in runs):.0f} MB")
    print(f"the 2-server report, warm: {median(fixed, 'full'):.2f} s ({median(fixed, 'full_wall'):.2f} s)")
    full = median(warm, "full")
    rss = max(run["rss_mb"] for run in cold + warm)
    ok = full < 1 and ratio(warm) <= 5 and median(warm, "html_mb") < 1 and rss < 400
    print("goals met" if ok else "GOALS MISSED: warm report under 1 s and within 5x the load, report.html under 1 MB, "
          "under 400 MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
