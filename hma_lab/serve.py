"""Run one lab in this process for a controlling parent (tests, benchmarks): one JSON line out, serve until stdin closes.

    python -m hma_lab.serve (--scenario NAME | --scenario-file PATH) [--realm-folder DIR --auth kerberos]

The JSON line holds the scan configuration, the secrets (the parent passes them to the collectors in-process), and
the endpoints. Running the lab in its own process gives it its own interpreter lock, as a real server would be.
With --realm-folder, the lab joins the Kerberos realm the parent started there (kdc.Realm; the parent passes the
realm's environment, KRB5_CONFIG, to this process) and its scan configuration uses --auth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hma_lab.commands import open_lab
from hma_lab.kdc import Realm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hma_lab.serve")
    parser.add_argument("--scenario")
    parser.add_argument("--scenario-file", type=Path)
    parser.add_argument("--realm-folder", type=Path)
    parser.add_argument("--auth", choices=("ntlm", "kerberos", "negotiate"))
    args = parser.parse_args(argv)
    realm = Realm.attach(args.realm_folder) if args.realm_folder else None
    with open_lab(args.scenario, args.scenario_file, realm=realm, auth=args.auth) as lab:
        sys.stdout.write(json.dumps({"scan_config": lab.scan_config(), "password": lab.credentials.password,
                                     "secrets": lab.secrets(), "describe": lab.describe()}) + "\n")
        sys.stdout.flush()
        ready = time.process_time()
        sys.stdin.read()   # the parent closes stdin (or exits) to stop the lab
        # the lab's own CPU time, for the benchmarks: in all, and since it was ready (what it spent serving)
        stats = {"commands": len(lab.command_log), "peak_shells": lab.endpoint.peak_shells,
                 "cpu_seconds": time.process_time(), "serving_cpu_seconds": time.process_time() - ready}
        sys.stderr.write(json.dumps(stats) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
