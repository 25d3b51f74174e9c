"""What the commands share: turning InputError into one line and exit 2, and printing an outcome."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import click


EXIT_OUTPUT_FAILED = 4


@contextmanager
def fail_on_input_errors() -> Iterator[None]:
    """InputError: one line and exit 2. OutputError (an output could not be produced): one line and exit 4."""
    from hma_check.errors import InputError, OutputError

    try:
        yield
    except InputError as exc:
        click.echo(f"hma-check: error: {exc}", err=True)
        sys.exit(2)
    except OutputError as exc:
        click.echo(f"hma-check: error: {exc}", err=True)
        sys.exit(EXIT_OUTPUT_FAILED)


def print_outcome(outcome: Any) -> None:
    counts = outcome.counts
    summary = ", ".join(f"{counts[s]} {s.replace('NOT_APPLICABLE', 'N/A')}" for s in counts if counts[s])
    click.echo(f"{outcome.verdict}: {summary}")
    click.echo(f"report: {outcome.out_dir / 'report.html'}")


def report_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that writes a report shares; pass them on with ``**report_kwargs(...)``."""
    return click.option("--pdf", is_flag=True, help="Also write report.pdf, printed by headless Chromium "
                        "(set HMA_CHECK_CHROMIUM if it is not /usr/bin/chromium or on PATH).")(command)


def report_kwargs(pdf: bool = False) -> dict[str, Any]:
    """run_report's keyword arguments; what the options need from this machine is checked now, before any work."""
    if pdf:
        from hma_check.render.pdf import find_chromium

        find_chromium()
    return {"pdf": pdf}
