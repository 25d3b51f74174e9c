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


# The lab (package hma_lab) and the libraries only it uses come with the [lab] extra.
LAB_MODULES = ("hma_lab", "psrpcore", "trustme")
LAB_MISSING = "the lab is not installed; install it with: pip install 'hma-check[lab]'"


def lab_commands() -> Any:
    """hma_lab.commands, imported on use (the product never imports the lab otherwise); without the [lab] extra one
    line says how to install it, and the exit code is 2."""
    import importlib

    try:
        return importlib.import_module("hma_lab.commands")
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in LAB_MODULES:
            raise
        click.echo(f"hma-check: error: {LAB_MISSING}", err=True)
        sys.exit(2)


def print_outcome(outcome: Any) -> None:
    counts = outcome.counts
    summary = ", ".join(f"{counts[s]} {s.replace('NOT_APPLICABLE', 'N/A')}" for s in counts if counts[s])
    report = outcome.report
    label = f"{report.verdict_label} ({outcome.verdict})" if report.kind == "validation" else outcome.verdict
    click.echo(f"{label}: {summary}")
    click.echo(f"report: {outcome.out_dir / 'report.html'}")


def report_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options every command that writes a report shares; pass them on with ``**report_kwargs(**options)``."""
    options = [
        click.option("--pdf", is_flag=True, help="Also write report.pdf, printed by headless Chromium (set "
                     "HMA_CHECK_CHROMIUM if it is not /usr/bin/chromium or on PATH)."),
        click.option("--after-enable", is_flag=True, help="Post-change validation: evaluate the switched state "
                     "(validation.yaml) instead of the readiness checks and write the short validated report."),
        click.option("--baseline", type=click.Path(file_okay=False, path_type=str), help="With --after-enable: the "
                     "readiness run's output folder (it must verify); the report links it and records its manifest "
                     "hash."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def report_kwargs(pdf: bool = False, after_enable: bool = False, baseline: str | None = None) -> dict[str, Any]:
    """run_report's keyword arguments; what the options need from this machine is checked now, before any work."""
    if pdf:
        from hma_check.render.pdf import find_chromium

        find_chromium()
    if baseline is not None and not after_enable:
        raise click.UsageError("--baseline is for --after-enable (the readiness run a validation follows)")
    return {"pdf": pdf, "after_enable": after_enable, "baseline": baseline}
