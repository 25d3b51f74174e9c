"""Benchmark: import of 1 GiB of HttpProxy logs, against Python's csv module merely reading the same files.

Run: .venv/bin/python benchmarks/httpproxy_import.py [--size-mib 1024] [--keep]. Writes the logs under
/tmp/hma-check-bench-httpproxy-<pid>/ (two servers, eight protocols, a week of hourly files, 5,000 users, lines as
long as real ones), deletes them afterwards. Each measurement runs in its own process, so its peak RSS is its own:

- baseline: ``for row in csv.reader(open(file, newline='', encoding='utf-8', errors='replace')): pass`` over every
  file, the same decoding the importer uses;
- hma-check: ``import_path(folder)``, the whole offline import of the folder into logs.httpproxy (sniffing,
  streaming, aggregation, the evidence data).

Baseline and import alternate (``--rounds``, default 3) and the best of each is compared, so that a burst of load
from other work on a shared machine does not decide the result; CPU time is reported beside wall time.

Goal (issue 17): hma-check at most 1.5x the baseline's wall time, peak RSS under 300 MB. Exits 1 when either is
missed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hma_check.collect.logs.httpproxy import FIELDS  # noqa: E402

PROTOCOLS = ("Mapi", "Ews", "Autodiscover", "Oab", "Eas", "RpcHttp", "Owa", "Ecp")
AGENTS = [
    *(f"Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.{b}; Pro)" for b in range(17000, 17040)),
    "Microsoft Office/15.0 (Windows NT 6.1; Microsoft Outlook 15.0.5589; Pro)",
    "Microsoft Office/14.0 (Windows NT 6.1; Microsoft Outlook 14.0.7268; Pro)", "MSRPC", "Microsoft BITS/7.8",
    *(f"Apple-iPhone{m}C{n}/20{n:02d}.{m}" for m in range(10, 16) for n in range(1, 4)),
    "Outlook-iOS-Android/1.0", "ExchangeServicesClient/15.00.0913.015", "MapiHttpClient", "AMProbe/Local/ClientAccess",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML  like Gecko) Chrome/129.0.0.0 Safari/537.36",
]
AUTH = ("Negotiate", "NTLM", "Basic", "Bearer", "Kerberos")
GENERIC = ("BeginRequest={begin};CorrelationID=<empty>;ProxyState-Run=None;FEAuth=BEVersion-1942063431;"
           "RoutingEntry=DatabaseGuid:fb7adba2-51f4-47e3-b170-fd39f85aaf35%40contoso.com%40contoso.com Server:EX01."
           "contoso.com+1942063431@638070367506148886;BeginGetResponse={begin};OnResponseReady={end};"
           "EndGetResponse={end};ProxyState-Complete=ProxyResponseData;SharedCacheGuard=0;EndRequest={end};")


def generate(folder: Path, size: int) -> int:
    """Hourly files for two servers and eight protocols over a week, about ``size`` bytes in all; returns bytes.

    As in a real organisation each user keeps a client and a way of signing in (an Outlook build, and for a third of
    them a phone on ActiveSync); the scheme and the user vary per line, the UserAgent follows the user."""
    rng = random.Random(17)
    users = [f"CONTOSO\\user{i:05d}" for i in range(5000)] + ["CONTOSO\\svc-crm", "CONTOSO\\HealthMailbox0a1b2c3d"]
    outlook = [a for a in AGENTS if a.startswith("Microsoft Office/")]
    phones = [a for a in AGENTS if a.startswith(("Apple-", "Outlook-"))]
    desk = {u: (outlook[i % len(outlook)], AUTH[i % 4]) for i, u in enumerate(users)}
    mobile = {u: (phones[i % len(phones)], "Basic" if i % 2 else "Bearer") for i, u in enumerate(users) if i % 3 == 0}
    carried = {"Eas": list(mobile), "RpcHttp": users[::10], "Owa": users, "Ecp": users[::50]}
    header = ",".join(FIELDS)
    start = datetime(2026, 11, 13, tzinfo=timezone.utc)
    hours = [start + timedelta(hours=h) for h in range(7 * 24)]
    per_file = size // (2 * len(PROTOCOLS) * len(hours)) + 1
    written = 0
    index = {name: i for i, name in enumerate(FIELDS)}
    for server in ("EX01", "EX02"):
        for protocol in PROTOCOLS:
            target = folder / server / "Logging" / "HttpProxy" / protocol
            target.mkdir(parents=True)
            for hour in hours:
                buffer = io.StringIO()
                buffer.write("\r\n".join([header, "#Software: Microsoft Exchange Server", "#Version: 15.02.2562.017",
                                          "#Log-type: HttpProxy Logs", f"#Date: {hour:%Y-%m-%dT%H:%M:%S}.000Z",
                                          f"#Fields: {header}"]) + "\r\n")
                writer = csv.writer(buffer, lineterminator="\r\n")
                row = [""] * len(FIELDS)
                while buffer.tell() < per_file:
                    moment = hour + timedelta(seconds=rng.random() * 3600)
                    stamp = f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
                    signed_in = rng.random() > 0.2
                    user = rng.choice(carried.get(protocol, users))
                    agent, scheme = mobile[user] if protocol == "Eas" else desk[user]
                    if protocol == "RpcHttp":
                        agent = "MSRPC"
                    elif protocol in ("Owa", "Ecp"):
                        agent, scheme = AGENTS[-1], "FBA"
                    row[index["DateTime"]] = stamp
                    row[index["RequestId"]] = str(uuid.UUID(int=rng.getrandbits(128)))
                    row[index["MajorVersion"]], row[index["MinorVersion"]] = "15", "2"
                    row[index["BuildVersion"]], row[index["RevisionVersion"]] = "2562", "17"
                    row[index["Protocol"]] = protocol
                    row[index["UrlHost"]] = "mail.contoso.com"
                    row[index["UrlStem"]] = f"/{protocol.lower()}/"
                    row[index["AuthenticationType"]] = scheme
                    row[index["IsAuthenticated"]] = "true" if signed_in else "false"
                    row[index["AuthenticatedUser"]] = user if signed_in else ""
                    row[index["AnchorMailbox"]] = "Sid~S-1-5-21-123456789-9876543211-123456798-4343"
                    row[index["UserAgent"]] = agent
                    row[index["ClientIpAddress"]] = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
                    row[index["ServerHostName"]] = server
                    row[index["HttpStatus"]] = "200" if signed_in else "401"
                    row[index["Method"]] = "POST"
                    row[index["TargetServer"]] = f"{server.lower()}.contoso.com"
                    row[index["RequestBytes"]], row[index["ResponseBytes"]] = "371", "443"
                    row[index["TotalRequestTime"]] = str(rng.randrange(500))
                    row[index["GenericInfo"]] = GENERIC.format(begin=stamp, end=stamp)
                    row[index["RoutingStatus"]] = "CafeV1"
                    writer.writerow(row)
                data = buffer.getvalue().encode("utf-8")
                (target / f"HttpProxy_{hour:%Y%m%d%H}-1.LOG").write_bytes(data)
                written += len(data)
    return written


CHILD_BASELINE = """
import csv, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).rglob('*.LOG')):
    with open(path, newline='', encoding='utf-8', errors='replace') as handle:
        for row in csv.reader(handle):
            pass
"""
CHILD_IMPORT = """
import sys
sys.path.insert(0, sys.argv[2])
from hma_check.collect.offline.importer import import_path
data = import_path(sys.argv[1]).snapshot.sources['logs.httpproxy'].data
print(data['requests'], data['malformed']['lines'], len(data['clients']), file=sys.stderr)
"""


def measure(label: str, code: str, folder: Path) -> dict[str, float]:
    """One measurement in its own process: wall time, CPU time (user + system) and peak RSS (MB) of that child."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, str(folder), str(ROOT)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    err = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"{label} failed: {err[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    peak = usage.ru_maxrss / 1024
    print(f"{label:<28} wall {elapsed:7.2f} s   cpu {cpu:7.2f} s   peak RSS {peak:6.1f} MB   {err.strip()}",
          flush=True)
    return {"wall": elapsed, "cpu": cpu, "rss": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3, help="baseline and import alternated, best of each kept")
    parser.add_argument("--keep", action="store_true", help="keep the generated logs")
    args = parser.parse_args()
    folder = Path(f"/tmp/hma-check-bench-httpproxy-{os.getpid()}")
    try:
        started = time.perf_counter()
        size = generate(folder, args.size_mib * 1024 * 1024)
        print(f"generated {size / 2**20:.0f} MiB in {time.perf_counter() - started:.1f} s under {folder}", flush=True)
        for path in folder.rglob("*.LOG"):      # every run starts from a warm page cache
            path.read_bytes()
        baseline: list[dict[str, float]] = []
        ours: list[dict[str, float]] = []
        for _ in range(args.rounds):            # alternated, so a burst of load on the machine hits both
            baseline.append(measure("baseline: csv.reader only", CHILD_BASELINE, folder))
            ours.append(measure("hma-check import_path", CHILD_IMPORT, folder))
        best = {side: {what: min(run[what] for run in runs) for what in ("wall", "cpu", "rss")}
                for side, runs in (("baseline", baseline), ("import", ours))}
        ratio = best["import"]["wall"] / best["baseline"]["wall"]
        result = {"size_mib": round(size / 2**20), "rounds": args.rounds,
                  "baseline_wall_s": round(best["baseline"]["wall"], 2),
                  "import_wall_s": round(best["import"]["wall"], 2), "ratio_wall": round(ratio, 3),
                  "baseline_cpu_s": round(best["baseline"]["cpu"], 2), "import_cpu_s": round(best["import"]["cpu"], 2),
                  "ratio_cpu": round(best["import"]["cpu"] / best["baseline"]["cpu"], 3),
                  "import_peak_rss_mb": round(max(run["rss"] for run in ours), 1),
                  "goal": "ratio_wall <= 1.5 and peak RSS < 300 MB"}
        print(json.dumps(result))
        return 0 if ratio <= 1.5 and result["import_peak_rss_mb"] < 300 else 1
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
