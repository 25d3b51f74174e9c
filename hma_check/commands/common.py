"""What the commands share: turning InputError into one line and exit 2, and printing an outcome."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator

import click


@contextmanager
def fail_on_input_errors() -> Iterator[None]:
    from hma_check.errors import InputError

    try:
        yield
    except InputError as exc:
        click.echo(f"hma-check: error: {exc}", err=True)
        sys.exit(2)


def print_outcome(outcome: Any) -> None:
    counts = outcome.counts
    summary = ", ".join(f"{counts[s]} {s.replace('NOT_APPLICABLE', 'N/A')}" for s in counts if counts[s])
    click.echo(f"{outcome.verdict}: {summary}")
    click.echo(f"report: {outcome.out_dir / 'report.html'}")
