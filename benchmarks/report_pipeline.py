"""Benchmark: saved evidence -> every output, for 200 servers and 50,000 mailbox users.

Baselines in the same run: loading and validating the same evidence.json (the floor: evaluation cannot be cheaper than
reading the facts), and the whole report for the 2-server baseline organisation (the fixed cost: loading and compiling
the catalogue, rendering). Goals: the whole report under 5 s and peak RSS under 400 MB at 200 servers and 50,000 users.
Run: .venv/bin/python benchmarks/report_pipeline.py
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # the tests.support helpers

from tests.support import baseline  # noqa: E402

from hma_check.commands.pipeline import run_report  # noqa: E402
from hma_check.contract.snapshot import load_snapshot  # noqa: E402

SERVERS, USERS, RUNS = 200, 50_000, 3


def build_small(folder: Path) -> Path:
    path = folder / "small.json"
    baseline.build().save(path)
    return path


def build_evidence(folder: Path) -> Path:
    snapshot = baseline.build(server_names=tuple(f"EX{i:03d}" for i in range(1, SERVERS + 1)))
    users = snapshot.sources[f"graph.users@{baseline.TENANT}"].data
    mailboxes = snapshot.sources["exchange.mailboxes"].data
    for i in range(USERS):
        upn = f"user{i:05d}@contoso.com"
        users.append({"userPrincipalName": upn, "mail": upn, "onPremisesSyncEnabled": True,
                      "onPremisesSecurityIdentifier": f"S-1-5-21-1004336348-1177238915-682003330-{20000 + i}"})
        mailboxes.append({"Name": f"User {i}", "UserPrincipalName": upn, "PrimarySmtpAddress": upn,
                          "RecipientTypeDetails": "UserMailbox"})
    path = folder / "evidence.json"
    snapshot.save(path)
    return path


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        small = build_small(Path(tmp))
        fixed = statistics.median(timed(lambda: run_report(small, Path(tmp) / "small-out")) for _ in range(RUNS))
        evidence = build_evidence(Path(tmp))
        size_mb = evidence.stat().st_size / 1e6
        load = statistics.median(timed(lambda: load_snapshot(evidence)) for _ in range(RUNS))
        full = statistics.median(timed(lambda: run_report(evidence, Path(tmp) / "out")) for _ in range(RUNS))
        html_mb = (Path(tmp) / "out" / "report.html").stat().st_size / 1e6
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"evidence: {SERVERS} servers, {USERS} users, {size_mb:.1f} MB; report.html {html_mb:.1f} MB")
    print(f"baselines: load the evidence {load:.2f} s; whole report for 2 servers {fixed:.2f} s")
    print(f"whole report: {full:.2f} s ({full / load:.1f}x the load, {full / fixed:.1f}x the 2-server report); "
          f"peak RSS {rss_mb:.0f} MB")
    ok = full < 5 and rss_mb < 400
    print("goals met" if ok else "GOALS MISSED: under 5 s and under 400 MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
