"""Benchmark: a Kerberos scan of 50 servers (Exchange and OS sections) against the same scan with NTLM (goal: within 10%).

The lab (50 servers, 150 ms per per-server Exchange cmdlet and 50 ms per WinRM call, as in exchange_scan.py and
os_fanout.py) runs in its own process and joins a throwaway MIT realm on loopback; each scan runs in a fresh
interpreter through pypsrp over HTTP with WinRM message encryption, the Exchange section at concurrency 12 and the OS
section at 8. The two differ only in how they sign in: NTLM (CONTOSO\\hma-reader) or Kerberos (hma-reader@CONTOSO.LOCAL,
a ticket obtained with the password, once per section). Scans alternate, ROUNDS of each; the medians are compared.

    python benchmarks/kerberos_scan.py [--servers 50] [--rounds 3]

Needs the MIT KDC (krb5-kdc, krb5-admin-server) and the kerberos extra. Prints one JSON line per scan and a summary;
exits 1 when the Kerberos median is more than 10% above the NTLM median or a scan left a source in error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_RATIO = 1.10
SCENARIO = """\
extends: ready
name: kerberos-bench-{servers}
latency: {{per_server: 150ms, default: 50ms}}
hybrid_configuration: {{ReceivingTransportServers: [EX001], SendingTransportServers: [EX001]}}
servers:
  - {{name: "EX{{n:03}}", count: {servers}}}
"""
PASSWORD_ENV = "HMA_CHECK_EXCHANGE_PASSWORD"


def scan_once(config_json: str) -> None:
    """Child mode: scan with the configuration given (the password is in the environment) and print the timings."""
    import yaml

    from hma_check.collect.config import load_config_text
    from hma_check.collect.runner import run_collectors

    config = load_config_text(yaml.safe_dump(json.loads(config_json)))
    started, cpu = time.perf_counter(), time.process_time()
    snapshot = run_collectors(config, environ={PASSWORD_ENV: os.environ[PASSWORD_ENV]})
    statuses: dict[str, int] = {}
    for result in snapshot.sources.values():
        statuses[result.status] = statuses.get(result.status, 0) + 1
    errors = sorted({r.error for r in snapshot.sources.values() if r.status == "error"})[:2]
    print(json.dumps({"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                      "statuses": statuses, "errors": errors}))


def configs(info: dict) -> dict[str, dict]:
    """The lab's Kerberos configuration, and the same with NTLM: same endpoints, same transport, other sign-in."""
    kerberos = {section: info["scan_config"][section] for section in ("exchange", "os")}
    ntlm_user = info["describe"]["username"]
    ntlm = {section: {**values, "auth": "ntlm", "username": ntlm_user} for section, values in kerberos.items()}
    return {"ntlm": ntlm, "kerberos": kerberos}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        scan_once(args.child)
        return 0

    from hma_lab.kdc import Realm

    folder = Path(tempfile.mkdtemp(prefix="hma-check-bench-"))
    scenario = folder / "scenario.yaml"
    scenario.write_text(SCENARIO.format(servers=args.servers), encoding="utf-8")
    with Realm("CONTOSO.LOCAL", domains=("contoso.local",)) as realm:
        env = {**os.environ, **realm.environ()}
        lab = subprocess.Popen([sys.executable, "-m", "hma_lab.serve", "--scenario-file", str(scenario),
                                "--realm-folder", str(realm.folder), "--auth", "kerberos"], env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            info = json.loads(lab.stdout.readline())  # type: ignore[union-attr]
            child_env = {**env, PASSWORD_ENV: info["password"]}
            walls: dict[str, list[float]] = {"ntlm": [], "kerberos": []}
            failed = False
            for round_ in range(args.rounds):
                for auth, config in configs(info).items():
                    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], env=child_env,
                                          capture_output=True, text=True, check=True)
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    result.update(auth=auth, round=round_ + 1, servers=args.servers)
                    print(json.dumps(result), flush=True)
                    walls[auth].append(result["wall"])
                    failed |= bool(result["statuses"].get("error"))
        finally:
            lab.stdin.close()  # type: ignore[union-attr]
            lab.wait(timeout=60)
            shutil.rmtree(folder, ignore_errors=True)
    ntlm, kerberos = statistics.median(walls["ntlm"]), statistics.median(walls["kerberos"])
    ratio = kerberos / ntlm
    met = ratio <= GOAL_RATIO and not failed
    print(json.dumps({"servers": args.servers, "ntlm_median_s": round(ntlm, 2),
                      "kerberos_median_s": round(kerberos, 2), "ratio": round(ratio, 3), "goal": GOAL_RATIO,
                      "sources_in_error": failed, "met": met}))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
