"""The collectors, registered once: the scan-configuration section each reads, the source namespace it fills, the
function that parses its section and the one that runs it.

Entries are "module:function" names, imported only when a configuration has that section (the Graph SDK is not loaded
for a scan without graph:). The order is the run order: a later collector reads what an earlier one found (the OS
collector needs exchange.servers, the probes the virtual directory URLs). A new collector adds one line here.
A section parser is ``parse(raw, context) -> settings`` (hma_check.collect.config.ConfigContext); a runner is
``run(settings, context) -> Iterable[SourceResult]`` (hma_check.collect.context.RunContext).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Collector:
    section: str             # the scan configuration's section
    namespace: str | None    # the sources it fills (docs/sources.md); None: a settings section, not a collector
    parser: str              # "module:function" that validates the section
    runner: str | None       # "module:function" that collects; None for a settings section

    def parse(self) -> Callable[..., Any]:
        return resolve(self.parser)

    def run(self) -> Callable[..., Any]:
        assert self.runner is not None, f"{self.section} is a settings section"
        return resolve(self.runner)


COLLECTORS: tuple[Collector, ...] = (
    Collector("exchange", "exchange", "hma_check.collect.exchange.config:parse_exchange_section",
              "hma_check.collect.exchange.collector:run_exchange"),
    Collector("os", "os", "hma_check.collect.os.config:parse_os_section", "hma_check.collect.os.collector:run_os"),
    # Exchange's HttpProxy logs, summarised on each server over the os: section's WinRM connection.
    Collector("logs", "logs", "hma_check.collect.logs.config:parse_logs_section",
              "hma_check.collect.logs.collector:run_logs"),
    Collector("graph", "graph", "hma_check.collect.graph.config:parse_graph",
              "hma_check.collect.graph.collector:run_graph"),
    Collector("probes", "probe", "hma_check.collect.probes.config:parse_probes_section",
              "hma_check.collect.probes.collector:run_probes"),
    # Optional areas to assess: recorded in the evidence as scan.options by the runner, never "run".
    Collector("options", None, "hma_check.collect.options:parse_options_section", None),
)
# Looked up at run time, so a test can register a stand-in for one section.
BY_SECTION: dict[str, Collector] = {collector.section: collector for collector in COLLECTORS}


def resolve(target: str) -> Callable[..., Any]:
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)
