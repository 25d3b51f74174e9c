"""The scan configuration file (YAML): one section per collector, each validated by the module that owns it.

    exchange:   hma_check.collect.exchange.config (the Exchange endpoint and how to sign in)
    os:         hma_check.collect.os.config (every server's WinRM endpoint)
    graph:      hma_check.collect.graph.config (tenants and app credentials)
    probes:     hma_check.collect.probes.config (outside-in HTTPS probes)
    options:    hma_check.collect.options (optional areas to assess, recorded as scan.options)
    logs:       hma_check.collect.logs.config (Exchange's HttpProxy logs summarised on each server over os:)

A section parser is ``parse(raw, context) -> settings``; ``context.fail(where, message)`` returns a ConfigError naming
the file and line of ``where`` (a path inside the section). Secrets never live in the file: sections name the
environment variables that hold them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hma_check.errors import ConfigError
from hma_check.util.yaml_source import Where, YamlDoc, load_yaml_bytes, load_yaml_file

# section -> "module:function". The module is imported only when the section is present.
SECTIONS: dict[str, str] = {
    "exchange": "hma_check.collect.exchange.config:parse_exchange_section",
    "os": "hma_check.collect.os.config:parse_os_section",
    "graph": "hma_check.collect.graph.config:parse_graph",
    "probes": "hma_check.collect.probes.config:parse_probes_section",
    "options": "hma_check.collect.options:parse_options_section",
    "logs": "hma_check.collect.logs.config:parse_logs_section",
}


@dataclass
class ConfigContext:
    """Handed to a section parser: positions errors, and resolves relative paths against the file's folder."""

    doc: YamlDoc
    section: str
    base_dir: Path

    def fail(self, where: Where, message: str) -> ConfigError:
        return self.doc.error((self.section, *where), message)  # type: ignore[return-value]

    def path(self, value: str) -> Path:
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (self.base_dir / candidate)


@dataclass
class ScanConfig:
    source: str
    sections: dict[str, Any] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.sections


def load_config(path: str | Path) -> ScanConfig:
    return parse_config(load_yaml_file(path, ConfigError), Path(path).resolve().parent)


def load_config_text(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> ScanConfig:
    return parse_config(load_yaml_bytes(text.encode("utf-8"), source, ConfigError), base_dir or Path.cwd())


def parse_config(doc: YamlDoc, base_dir: Path) -> ScanConfig:
    if not isinstance(doc.data, dict) or not doc.data:
        raise doc.error((), "a scan configuration is a mapping with at least one of: " + ", ".join(sorted(SECTIONS)))
    config = ScanConfig(source=doc.source)
    for name, raw in doc.data.items():
        if name.startswith("x-"):
            continue  # room for YAML anchors and notes
        target = SECTIONS.get(name)
        if target is None:
            raise doc.error((name,), "unknown section; expected one of: " + ", ".join(sorted(SECTIONS)))
        parser = _resolve(target)
        config.sections[name] = parser(raw, ConfigContext(doc, name, base_dir))
    if "logs" in config.sections and "os" not in config.sections:
        raise doc.error(("logs",), "reads the logs over the OS channel (WinRM): add an os: section (it may be empty)")
    return config


def _resolve(target: str) -> Callable[[Any, ConfigContext], Any]:
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)
