"""Benchmark: hma-check verify and hma-check diff on runs of 200 servers and 50,000 users.

Baselines in the same run: hashing the same files with hashlib alone (the floor for verify) and loading the two
evidence files (the floor for diff: it cannot be cheaper than reading both). Goals: verify within 2x its floor plus
0.2 s, diff (500 users changed, one server added) under 5 s, peak RSS under 600 MB.
Run: .venv/bin/python benchmarks/evidence_integrity.py
"""

from __future__ import annotations

import hashlib
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # the tests.support helpers

from tests.support import baseline  # noqa: E402

from hma_check.runs.manifest import verify_folder  # noqa: E402
from hma_check.commands.pipeline import run_report  # noqa: E402
from hma_check.runs.diff import compare, load_run  # noqa: E402
from hma_check.contract.snapshot import load_snapshot  # noqa: E402

SERVERS, USERS, CHANGED, RUNS = 200, 50_000, 500, 3


def build(folder: Path, name: str, servers: int, changed: int) -> Path:
    snapshot = baseline.build(server_names=tuple(f"EX{i:03d}" for i in range(1, servers + 1)))
    users = snapshot.sources[f"graph.users@{baseline.TENANT}"].data
    for i in range(USERS):
        upn = f"user{i:05d}@contoso.com"
        users.append({"userPrincipalName": upn, "mail": upn, "onPremisesSyncEnabled": i >= changed,
                      "onPremisesSecurityIdentifier": f"S-1-5-21-1004336348-1177238915-682003330-{20000 + i}"})
    evidence = folder / f"{name}.json"
    snapshot.save(evidence)
    run_report(evidence, folder / name)
    return folder / name


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def hash_all(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        old = build(Path(tmp), "old", SERVERS, 0)
        new = build(Path(tmp), "new", SERVERS + 1, CHANGED)
        floor = statistics.median(timed(lambda: hash_all(old)) for _ in range(RUNS))
        verify = statistics.median(timed(lambda: verify_folder(old)) for _ in range(RUNS))
        load = statistics.median(timed(lambda: (load_snapshot(old / "evidence.json"),
                                                load_snapshot(new / "evidence.json"))) for _ in range(RUNS))
        result = []
        diff = statistics.median(timed(lambda: result.append(compare(load_run(old), load_run(new))))
                                 for _ in range(RUNS))
        size_mb = sum(p.stat().st_size for p in old.rglob("*") if p.is_file()) / 1e6
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    changes = result[-1]
    print(f"runs: {SERVERS} servers, {USERS} users, {size_mb:.1f} MB per folder")
    print(f"verify: {verify:.2f} s (floor: hashlib over the same files {floor:.2f} s)")
    print(f"diff: {diff:.2f} s for {len(changes.statuses)} status and {len(changes.facts)} fact changes "
          f"(floor: loading both evidence files {load:.2f} s); peak RSS {rss_mb:.0f} MB")
    ok = verify < 2 * floor + 0.2 and diff < 5 and rss_mb < 600
    print("goals met" if ok else "GOALS MISSED: verify within 2x hashlib + 0.2 s, diff under 5 s, under 600 MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
