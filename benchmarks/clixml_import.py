"""Benchmark: parse_clixml + shape on a large Get-Mailbox capture, against xml.etree parsing the same bytes.

Run: .venv/bin/python benchmarks/clixml_import.py [--mailboxes 20000] [--rounds 5]. The capture is what
``Get-Mailbox | Select-Object Name, UserPrincipalName, PrimarySmtpAddress, RecipientTypeDetails | Export-Clixml``
writes in Windows PowerShell 5.1 (UTF-16LE, 13.2 MiB for 20,000 mailboxes). The baseline is
``xml.etree.ElementTree.fromstring`` of the same bytes: the stdlib C parser building a tree, no conversion.

- time: baseline and hma-check alternate in this process (``--rounds``), each after a ``gc.collect()``, without
  tracemalloc (it slows every allocation, so it would weigh on whichever side allocates more); best and median of
  wall and CPU time are printed, the goal compares the best wall times (a burst of load from other work on a shared
  machine then decides nothing);
- memory: one more run of each under tracemalloc (the peak of Python's allocator, which expat and xml.etree's C
  code allocate through as well), and the peak RSS of each in a fresh process, counted from just before the work
  (Linux's peak-RSS reset; where it is not allowed, the growth of ru_maxrss).

Goal (issue 18): hma-check at most 1.5x the baseline's time at most 0.5x its tracemalloc peak. Exits 1 when missed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hma_check.collect.clixml import parse_clixml  # noqa: E402
from hma_check.collect.exchange.objects import shape  # noqa: E402

TIME_GOAL = 1.5
MEMORY_GOAL = 0.5


def capture(mailboxes: int) -> bytes:
    """What Select-Object Name, UserPrincipalName, PrimarySmtpAddress, RecipientTypeDetails | Export-Clixml writes
    in Windows PowerShell 5.1 (UTF-16LE), one shared TN table."""
    objects = []
    for i in range(mailboxes):
        tn = ('<TN RefId="0"><T>Selected.Microsoft.Exchange.Data.Directory.Management.Mailbox</T>'
              '<T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>' if i == 0 else '<TNRef RefId="0" />')
        objects.append(
            f'<Obj RefId="{2 * i}">{tn}<MS><S N="Name">user{i}</S><S N="UserPrincipalName">user{i}@contoso.com</S>'
            f'<Obj N="PrimarySmtpAddress" RefId="{2 * i + 1}"><TNRef RefId="1" /><ToString>user{i}@contoso.com</ToString>'
            f'<Props><S N="Local">user{i}</S><S N="Domain">contoso.com</S></Props></Obj>'
            f'<S N="RecipientTypeDetails">UserMailbox</S></MS></Obj>')
    objects[0] = objects[0].replace('<TNRef RefId="1" />', '<TN RefId="1"><T>Microsoft.Exchange.Data.SmtpAddress</T></TN>', 1)
    text = '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">' + "".join(objects) + "</Objs>"
    return b"\xff\xfe" + text.encode("utf-16-le")


def baseline(data: bytes) -> Any:
    return ET.fromstring(data)


def hma_check(data: bytes) -> Any:
    return shape("exchange.mailboxes", parse_clixml(data, source="bench"))


SIDES: dict[str, Callable[[bytes], Any]] = {"baseline": baseline, "hma-check": hma_check}


def timed(work: Callable[[bytes], Any], data: bytes) -> tuple[float, float]:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = work(data)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    del result
    return wall, cpu


def traced_peak(work: Callable[[bytes], Any], data: bytes) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        result = work(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del result
    return peak


def _status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(key + r":\s+(\d+)", text).group(1)) * 1024  # type: ignore[union-attr]
            for key in ("VmHWM", "VmRSS")}


def child(side: str, path: str) -> None:
    """In a fresh process: the peak RSS of one side's work on the capture in ``path``, as JSON on stdout."""
    data = Path(path).read_bytes()
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        reset = True
    except OSError:
        reset = False
    before = _status()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = SIDES[side](data)
    after = _status()
    grown = (after["VmHWM"] - before["VmRSS"] if reset
             else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - maxrss_before)
    del result
    print(json.dumps({"peak": after["VmHWM"], "work": grown, "reset": reset}))


def rss(side: str, path: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", side, path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5, help="baseline and hma-check alternated, best of each kept")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("count", nargs="?", type=int, help=argparse.SUPPRESS)  # the old positional mailbox count
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    data = capture(args.count or args.mailboxes)
    print(f"{args.count or args.mailboxes} mailboxes, {len(data) / 2**20:.1f} MiB UTF-16; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)

    walls: dict[str, list[float]] = {side: [] for side in SIDES}
    cpus: dict[str, list[float]] = {side: [] for side in SIDES}
    for _ in range(args.rounds):
        for side, work in SIDES.items():
            wall, cpu = timed(work, data)
            walls[side].append(wall)
            cpus[side].append(cpu)
    for side in SIDES:
        print(f"{side:<10} wall best {min(walls[side]):6.3f} s  median {statistics.median(walls[side]):6.3f} s   "
              f"cpu best {min(cpus[side]):6.3f} s  median {statistics.median(cpus[side]):6.3f} s", flush=True)

    peaks = {side: traced_peak(work, data) for side, work in SIDES.items()}
    with tempfile.NamedTemporaryFile(suffix=".xml") as handle:
        handle.write(data)
        handle.flush()
        resident = {side: rss(side, handle.name) for side in SIDES}
    for side in SIDES:
        print(f"{side:<10} tracemalloc peak {peaks[side] / 2**20:6.1f} MiB   fresh process: peak RSS "
              f"{resident[side]['peak'] / 2**20:6.1f} MiB, {resident[side]['work'] / 2**20:6.1f} MiB of it the work"
              f"{'' if resident[side]['reset'] else ' (ru_maxrss growth)'}")

    result = {
        "time_ratio_best": min(walls["hma-check"]) / min(walls["baseline"]),
        "time_ratio_median": statistics.median(walls["hma-check"]) / statistics.median(walls["baseline"]),
        "cpu_ratio_best": min(cpus["hma-check"]) / min(cpus["baseline"]),
        "memory_ratio": peaks["hma-check"] / peaks["baseline"],
        "rss_work_ratio": resident["hma-check"]["work"] / resident["baseline"]["work"],
    }
    met = result["time_ratio_best"] <= TIME_GOAL and result["memory_ratio"] <= MEMORY_GOAL
    print(json.dumps({**{k: round(v, 2) for k, v in result.items()}, "goal": f"time <= {TIME_GOAL}x, "
                      f"tracemalloc peak <= {MEMORY_GOAL}x", "met": met}))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
