"""The hma-check command line: wiring only. Each subcommand lives in hma_check/commands/ and is imported on use,
so ``hma-check --help`` never pays for msgraph-sdk, pypsrp or Jinja2."""

from __future__ import annotations

import importlib
import os
import sys

import click

from hma_check import __version__

# name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "report": ("hma_check.commands.report", "report", "Evaluate an evidence file and write the readiness report."),
    "checks": ("hma_check.commands.checks", "checks", "List, validate and explain checks."),
    "collector-script": ("hma_check.commands.collector_script", "collector_script",
                         "Print the read-only PowerShell collection script for offline mode."),
    "import": ("hma_check.commands.import_", "import_", "Import the collection script's folder or zip (offline mode) and report."),
    "scan": ("hma_check.commands.scan", "scan", "Scan a live organisation (read-only) and write the readiness report."),
    "demo": ("hma_check.commands.demo", "demo", "Start the built-in lab, scan it through the real clients, and report."),
    "lab": ("hma_check.commands.lab", "lab", "Run a simulated Exchange organisation on loopback until Ctrl-C."),
    "diff": ("hma_check.commands.diff", "diff", "Compare two runs: status changes, fact changes, anything worse."),
    "verify": ("hma_check.commands.verify", "verify", "Check a report folder against its manifest (and signature)."),
    "sign": ("hma_check.commands.sign", "sign", "Sign a report folder's manifest with your X.509 certificate (CMS)."),
}

EPILOG = """\b
Examples:
  hma-check demo --out out/demo                       scan the built-in lab and write the report
  hma-check scan --config scan.yaml --out out/run1    scan a real organisation (read-only)
  hma-check report --evidence out/run1/evidence.json --out out/rerun
  hma-check verify out/run1                           check no file changed since (docs/evidence.md)
  hma-check diff out/run1 out/run2                    what changed between two runs
  hma-check collector-script > Collect-HmaReadiness.ps1   offline mode: the customer runs it ...
  hma-check import HmaReadiness.zip --out out/offline      ... and you import what it wrote
  hma-check checks list
  hma-check checks explain HMA-VDIR-001

\b
Exit codes: 0 READY, 1 NOT_READY, 2 usage or configuration error, 3 INCOMPLETE,
            4 nothing could be collected or an internal failure.
"""


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``, the width click wraps help to, without importing shutil.

    Importing shutil probes zlib, bz2 and lzma: about 2 ms of the ~50 ms ``hma-check --help`` takes, most of what it
    costs beyond ``import click``. The same steps in the same order: COLUMNS when it is a positive number, else
    the terminal on the interpreter's original stdout, else 80.
    """
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


class _HelpContext(click.Context):
    """The top-level group's context: its help and usage lines are wrapped to the width click's HelpFormatter would
    choose, measured without shutil (above). Where click's width is forced (its CliRunner) or set, click decides."""

    def make_formatter(self) -> click.HelpFormatter:
        from click import formatting

        if self.terminal_width is not None or formatting.FORCED_WIDTH is not None:
            return super().make_formatter()
        max_width = self.max_content_width if self.max_content_width is not None else 80
        return self.formatter_class(width=max(min(_terminal_columns(), max_width) - 2, 50),
                                    max_width=self.max_content_width)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when they run (or when their own --help is asked for)."""

    context_class = _HelpContext

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hma-check")
def cli() -> None:
    """Is this Exchange organisation ready for Hybrid Modern Authentication?

    hma-check collects facts read-only (Exchange remote PowerShell, server OS over WinRM, Microsoft Graph,
    anonymous HTTPS probes, or Export-Clixml files), evaluates the checks in checks.yaml and writes a readiness
    report with evidence and ordered enable and rollback runbooks. It never changes anything.
    """


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="hma-check", standalone_mode=True)
    except Exception as exc:
        from hma_check.errors import InputError   # imported only on failure: --help does not pay for it

        if not isinstance(exc, InputError):    # raised outside a command's own handling
            raise
        click.echo(f"hma-check: error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
