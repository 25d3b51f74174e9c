"""The scan configuration file (YAML): one section per collector, each validated by the parser the collector
registry names for it (hma_check.collect.registry: exchange, os, logs, graph, probes, and options).

A section parser is ``parse(raw, context) -> settings``; ``context.fail(where, message)`` returns a ConfigError naming
the file and line of ``where`` (a path inside the section). Secrets never live in the file: sections name the
environment variables that hold them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hma_check.collect.registry import BY_SECTION
from hma_check.errors import ConfigError, did_you_mean
from hma_check.util.yaml_source import Where, YamlDoc, load_yaml_bytes, load_yaml_file

@dataclass
class ConfigContext:
    """Handed to a section parser: positions errors, and resolves relative paths against the file's folder."""

    doc: YamlDoc
    section: str
    base_dir: Path

    def fail(self, where: Where, message: str) -> ConfigError:
        return self.doc.error((self.section, *where), message)  # type: ignore[return-value]

    def path(self, value: str) -> Path:
        candidate = Path(os.path.expanduser(value))   # Path.expanduser raises for an unknown ~user
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
        raise doc.error((), "a scan configuration is a mapping with at least one of: " + ", ".join(sorted(BY_SECTION)))
    config = ScanConfig(source=doc.source)
    for name, raw in doc.data.items():
        if name.startswith("x-"):
            continue  # room for YAML anchors and notes
        collector = BY_SECTION.get(name)
        if collector is None:
            raise doc.error((name,), f"unknown section{did_you_mean(name, BY_SECTION)}; expected one of: "
                            + ", ".join(sorted(BY_SECTION)))
        config.sections[name] = collector.parse()(raw, ConfigContext(doc, name, base_dir))
    if "logs" in config.sections and "os" not in config.sections:
        raise doc.error(("logs",), "reads the logs over the OS channel (WinRM): add an os: section (it may be empty)")
    return config
