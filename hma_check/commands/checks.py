"""hma-check checks list | validate | explain: the catalogue and user checks files."""

from __future__ import annotations

import click


@click.group(epilog="""\b
Examples:
  hma-check checks list
  hma-check checks list --checks site-checks.yaml
  hma-check checks validate site-checks.yaml
  hma-check checks explain HMA-SPN-001""")
def checks() -> None:
    """List, validate and explain checks."""


@checks.command("list")
@click.option("--checks", "checks_files", multiple=True, type=click.Path(dir_okay=False), help="Extra checks file.")
def list_checks(checks_files: tuple[str, ...]) -> None:
    """Every check: id, severity, area and title."""
    from hma_check.commands.common import fail_on_input_errors
    from hma_check.commands.pipeline import load_all_checks

    with fail_on_input_errors():
        loaded = load_all_checks(list(checks_files))
    for check in loaded.checks:
        click.echo(f"{check.id:<16} {check.severity:<8} {check.area:<20} {check.title}")
    for step in loaded.steps:
        click.echo(f"{step.id:<16} {'step':<8} {'phase ' + str(step.phase):<20} {step.title}")


@checks.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(files: tuple[str, ...]) -> None:
    """Validate checks files (together with the shipped catalogue, so ids stay unique). Exit 2 on the first error."""
    from pathlib import Path

    from hma_check.commands.common import fail_on_input_errors
    from hma_check.commands.pipeline import load_all_checks

    with fail_on_input_errors():
        loaded = load_all_checks(list(files))
    given = {str(Path(f)) for f in files}   # as the loader names them: './site.yaml' is 'site.yaml'
    own = [c for c in loaded.checks if c.file in given]
    click.echo(f"ok: {len(own)} checks and {len([s for s in loaded.steps if s.file in given])} steps in "
               f"{len(files)} file(s)")


@checks.command("explain")
@click.argument("check_id")
@click.option("--checks", "checks_files", multiple=True, type=click.Path(dir_okay=False), help="Extra checks file.")
def explain(check_id: str, checks_files: tuple[str, ...]) -> None:
    """Everything about one check: what it reads, what it expects, why, how to fix and undo it."""
    import sys

    from hma_check.evaluate.checks import Check
    from hma_check.commands.common import fail_on_input_errors
    from hma_check.commands.pipeline import load_all_checks
    from hma_check.contract.sources import BY_NAME

    with fail_on_input_errors():
        loaded = load_all_checks(list(checks_files))
    item = loaded.by_id(check_id.upper())
    if item is None:
        click.echo(f"hma-check: error: no check {check_id}; see 'hma-check checks list'", err=True)
        sys.exit(2)
    click.echo(f"{item.id}: {item.title}")
    if isinstance(item, Check):
        click.echo(f"  area {item.area}, severity {item.severity}" + (f", phase {item.phase}" if item.phase else ""))
        click.echo(f"  expects: {item.expect}")
    else:
        click.echo(f"  runbook step, phase {item.phase}")
    click.echo(f"  why: {item.why}")
    click.echo("  reads:")
    for name in item.requires:
        click.echo(f"    {name}  <- {BY_NAME[name].filled_by}")
    for key in ("for_each", "where", "when", "assert"):
        if key in item.raw:
            click.echo(f"  {key}: {' '.join(str(item.raw[key]).split())}")
    for key in ("enable", "rollback"):
        if key in item.raw:
            click.echo(f"  {key} (template):")
            for line in str(item.raw[key]).strip().splitlines():
                click.echo(f"    {line}")
    click.echo("  references:")
    for ref in item.references:
        click.echo(f"    {ref}")
    click.echo(f"  defined at {item.file}:{item.line}")
