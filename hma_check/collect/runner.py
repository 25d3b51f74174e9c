"""Run the configured collectors into one Snapshot; a collector that fails never loses the others' results.

Collectors run in the registry's order (hma_check.collect.registry: exchange, os, graph, probes) so a later one can
read what an earlier one found (the probes need the virtual directory URLs, for example).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from hma_check.collect.config import ScanConfig
from hma_check.collect.context import Progress, RunContext
from hma_check.collect.options import ScanOptions, options_result
from hma_check.collect.registry import BY_SECTION
from hma_check.contract.snapshot import Snapshot, SourceResult
from hma_check.contract.sources import SOURCES
from hma_check.errors import ConfigError, InputError


def run_collectors(config: ScanConfig, *, secrets: Mapping[str, str] | None = None,
                   environ: Mapping[str, str] | None = None, prompt: Callable[[str], str] | None = None,
                   progress: Callable[[str], Progress] | None = None) -> Snapshot:
    """Collect every configured section. Usage errors (a missing password variable) raise InputError before
    anything is sent for that section; any other failure becomes error results for that collector's sources."""
    unknown = [section for section in config.sections if section not in BY_SECTION]
    if unknown:   # the configuration loader refuses these; a ScanConfig built in code might not
        raise ConfigError(f"no collector is registered for the {unknown[0]} section", path=config.source)
    snapshot = Snapshot.new(target=_target(config))
    context = RunContext(snapshot=snapshot, secrets=dict(secrets or {}),
                         environ=dict(os.environ) if environ is None else dict(environ), prompt=prompt,
                         progress=progress or (lambda section: Progress()), sections=dict(config.sections))
    for collector in list(BY_SECTION.values()):
        section = collector.section
        if section not in config.sections or collector.runner is None:
            continue
        try:
            for result in collector.run()(config.sections[section], context):
                snapshot.add(result)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - one collector's bug must not cost the others' evidence
            reason = context.scrubber(config.sections)(f"the {section} collector failed: {type(exc).__name__}: {exc}")
            _mark_missing(snapshot, collector.namespace, "error", reason)
    for collector in BY_SECTION.values():
        if collector.namespace is not None and collector.section not in config.sections:
            _mark_missing(snapshot, collector.namespace, "skipped",
                          f"not collected: the scan configuration has no '{collector.section}:' section")
    snapshot.add(options_result(config.sections.get("options") or ScanOptions(), _options_origin(config)))
    return snapshot


def _options_origin(config: ScanConfig) -> str:
    if "options" in config.sections:
        return f"the options: section of {config.source}"
    return f"{config.source} has no options: section (no optional area asked for)"


def _mark_missing(snapshot: Snapshot, namespace: str | None, status: str, reason: str) -> None:
    """Record every source of a section that has no result at all, so the report says why and checks say ERROR.

    A scoped source (per server, tenant, URL) gets one result without a scope: its servers or tenants may be
    exactly what could not be learned.
    """
    present = {result.name for result in snapshot.sources.values()}
    for spec in SOURCES:
        if spec.collector != namespace or spec.name in present:
            continue
        if status == "error":
            snapshot.add(SourceResult.error_result(spec.name, reason, command=spec.filled_by))
        else:
            snapshot.add(SourceResult.skipped_result(spec.name, reason, command=spec.filled_by))


def _target(config: ScanConfig) -> dict[str, Any]:
    target: dict[str, Any] = {}
    for name, settings in config.sections.items():
        summary = getattr(settings, "summary", None)
        if callable(summary):
            target[name] = summary()
    return target
