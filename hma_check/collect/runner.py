"""Run the configured collectors into one Snapshot; a collector that fails never loses the others' results.

Collectors run in a fixed order (exchange, os, graph, probes) so a later one can read what an earlier one found
(the probes need the virtual directory URLs, for example). A collector is ``run(settings, context) ->
Iterable[SourceResult]``, registered in COLLECTORS by the section it reads; its owner adds one line there.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from hma_check.collect.options import ScanOptions, options_result
from hma_check.collect.config import ScanConfig
from hma_check.errors import ConfigError, InputError
from hma_check.contract.snapshot import Snapshot, SourceResult
from hma_check.contract.sources import SOURCES
from hma_check.util.scrub import Scrubber

ORDER = ("exchange", "os", "logs", "graph", "probes")
COLLECTORS: dict[str, str] = {
    "exchange": "hma_check.collect.runner:run_exchange",
    "os": "hma_check.collect.runner:run_os",
    "logs": "hma_check.collect.runner:run_logs",
    "graph": "hma_check.collect.graph.collector:run_graph",
    "probes": "hma_check.collect.probes.collector:run_probes",
}
# Sections that configure the scan rather than collect: recorded in the evidence as scan.options, never "run".
SETTINGS_SECTIONS = ("options",)


class Progress:
    """Per-collector progress: ``start(total)`` then ``advance(label, ok)`` per query. The default draws nothing."""

    def start(self, total: int) -> None: ...

    def advance(self, label: str, ok: bool) -> None: ...

    def finish(self) -> None: ...


@dataclass
class RunContext:
    snapshot: Snapshot
    secrets: Mapping[str, str] = field(default_factory=dict)     # in-process values (the demo lab's password)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    prompt: Callable[[str], str] | None = None                  # asks for a password on a terminal
    progress: Callable[[str], Progress] = lambda section: Progress()
    handed_out: list[str] = field(default_factory=list)         # every password given to a collector, prompt included
    sections: Mapping[str, Any] = field(default_factory=dict)   # every section's settings (logs reads os's)

    def scrubber(self, config: ScanConfig) -> Scrubber:
        """Every secret this run can know of: in-process values, passwords handed out, and the values of the
        environment variables the configuration names (password_env, client_secret_env...)."""
        named = [value for settings in config.sections.values() for key, value in vars_of(settings).items()
                 if key.endswith("_env") and isinstance(value, str)]
        return Scrubber([*self.secrets.values(), *self.handed_out, *(self.environ.get(name) for name in named)])


def run_collectors(config: ScanConfig, *, secrets: Mapping[str, str] | None = None,
                   environ: Mapping[str, str] | None = None, prompt: Callable[[str], str] | None = None,
                   progress: Callable[[str], Progress] | None = None) -> Snapshot:
    """Collect every configured section. Usage errors (a missing password variable) raise InputError before
    anything is sent for that section; any other failure becomes error results for that collector's sources."""
    snapshot = Snapshot.new(target=_target(config))
    context = RunContext(snapshot=snapshot, secrets=dict(secrets or {}),
                         environ=dict(os.environ) if environ is None else dict(environ), prompt=prompt,
                         progress=progress or (lambda section: Progress()), sections=dict(config.sections))
    sections = [s for s in ORDER if s in config.sections] + [s for s in config.sections if s not in ORDER]
    for section in (s for s in sections if s not in SETTINGS_SECTIONS):
        runner = _resolve(COLLECTORS[section]) if section in COLLECTORS else None
        if runner is None:
            raise ConfigError(f"no collector is registered for the {section} section", path=config.source)
        try:
            for result in runner(config.sections[section], context):
                snapshot.add(result)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - one collector's bug must not cost the others' evidence
            reason = context.scrubber(config)(f"the {section} collector failed: {type(exc).__name__}: {exc}")
            _mark_missing(snapshot, section, "error", reason)
    for section in SECTION_NAMESPACE:
        if section not in config.sections:
            _mark_missing(snapshot, section, "skipped",
                          f"not collected: the scan configuration has no '{section}:' section")
    snapshot.add(options_result(config.sections.get("options") or ScanOptions(), _options_origin(config)))
    return snapshot


def vars_of(settings: Any) -> dict[str, Any]:
    """A section's settings as a mapping (dataclasses and plain objects alike)."""
    if isinstance(settings, dict):
        return settings
    return dict(getattr(settings, "__dict__", {}))


def _options_origin(config: ScanConfig) -> str:
    if "options" in config.sections:
        return f"the options: section of {config.source}"
    return f"{config.source} has no options: section (no optional area asked for)"


# The scan configuration's sections and the source namespaces they fill (docs/sources.md).
SECTION_NAMESPACE = {"exchange": "exchange", "os": "os", "logs": "logs", "graph": "graph", "probes": "probe"}


def _mark_missing(snapshot: Snapshot, section: str, status: str, reason: str) -> None:
    """Record every source of a section that has no result at all, so the report says why and checks say ERROR.

    A scoped source (per server, tenant, URL) gets one result without a scope: its servers or tenants may be
    exactly what could not be learned.
    """
    namespace = SECTION_NAMESPACE.get(section, section)
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


def _resolve(target: str) -> Callable[[Any, RunContext], Iterable[SourceResult]]:
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


# ------------------------------------------------------------------------------------------------- exchange

def section_password(section: str, settings: Any, context: RunContext, target: str) -> str | None:
    """In-process secret (the demo), else the environment variable the config names, else a prompt on a terminal."""
    if settings.auth == "certificate":
        return None
    value = context.secrets.get(f"{section}.password") or context.environ.get(settings.password_env)
    if not value and settings.auth == "kerberos":
        return None  # the Kerberos ticket cache (kinit) signs in without a password
    if not value and context.prompt is not None:
        value = context.prompt(f"Password for {settings.username} on {target}")
    if value:
        context.handed_out.append(value)
        return value
    raise ConfigError(f"{section}: no password: set the environment variable {settings.password_env} "
                      "(the configuration's password_env) or run hma-check on a terminal to be asked")


def exchange_password(settings: Any, context: RunContext) -> str | None:
    return section_password("exchange", settings, context, settings.server)


def run_exchange(settings: Any, context: RunContext) -> list[SourceResult]:
    from hma_check.collect.exchange.collector import collect_exchange

    password = exchange_password(settings, context)
    progress = context.progress("exchange")
    try:
        return collect_exchange(settings, password, progress=progress)
    finally:
        progress.finish()


# ------------------------------------------------------------------------------------------------- os

def run_os(settings: Any, context: RunContext) -> list[SourceResult]:
    """Reads exchange.servers and exchange.auth_config from the snapshot: the exchange collector runs first."""
    from hma_check.collect.os.collector import collect_os

    password = section_password("os", settings, context, "the Exchange servers (WinRM)")
    progress = context.progress("os")
    try:
        return collect_os(settings, password, context.snapshot, progress=progress)
    finally:
        progress.finish()


# ------------------------------------------------------------------------------------------------- logs

def run_logs(settings: Any, context: RunContext) -> list[SourceResult]:
    """Reads exchange.servers from the snapshot and connects as the os: section says (config requires one)."""
    from hma_check.collect.logs.collector import collect_logs

    os_settings = context.sections["os"]
    password = section_password("os", os_settings, context, "the Exchange servers (WinRM)")
    progress = context.progress("logs")
    try:
        return collect_logs(settings, os_settings, password, context.snapshot)
    finally:
        progress.finish()
