"""hma-check collector-script: print the read-only PowerShell collection script for offline mode."""

from __future__ import annotations

import sys

import click


@click.command("collector-script")
@click.option("--graph", is_flag=True, help="Also read Microsoft Graph (needs the Microsoft.Graph PowerShell modules).")
def collector_script(graph: bool) -> None:
    """Print Collect-HmaReadiness.ps1 for a customer to run in the Exchange Management Shell.

    \b
    hma-check collector-script --graph > Collect-HmaReadiness.ps1
    It runs only Get- cmdlets (and Get-Mg cmdlets with --graph), saves every result with Export-Clixml plus a
    manifest, and zips the folder; "hma-check import <zip> --out <dir>" then builds the same report as a live scan.
    """
    from hma_check.collect.offline.script import collector_script as render

    # Bytes, so CRLF line ends arrive as they are whatever the platform's text mode would do to them.
    sys.stdout.flush()
    sys.stdout.buffer.write(render(graph=graph).encode("ascii"))
    sys.stdout.buffer.flush()
