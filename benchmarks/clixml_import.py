"""Benchmark: parse_clixml on a large Get-Mailbox capture, against xml.etree parsing the same bytes in the same run.

Run: .venv/bin/python benchmarks/clixml_import.py [mailboxes]. Prints time, the ratio to the baseline (stdlib C XML
parser building a tree, no conversion) and peak memory. Target: ratio below 8, peak below 6x the file size.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
import xml.etree.ElementTree as ET

from hma_check.collect.clixml import parse_clixml
from hma_check.collect.exchange.objects import shape


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


def measure(label: str, work) -> float:
    tracemalloc.start()
    started = time.perf_counter()
    work()
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{label:<38} {elapsed:7.2f} s   peak {peak / 2**20:7.1f} MiB")
    return elapsed


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    data = capture(count)
    print(f"{count} mailboxes, {len(data) / 2**20:.1f} MiB UTF-16")
    baseline = measure("baseline: xml.etree.fromstring", lambda: ET.fromstring(data))
    ours = measure("parse_clixml + shape(exchange.mailboxes)",
                   lambda: shape("exchange.mailboxes", parse_clixml(data, source="bench")))
    print(f"ratio {ours / baseline:.1f}x the baseline")


if __name__ == "__main__":
    main()
