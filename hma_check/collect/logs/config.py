"""The ``logs:`` section of the scan configuration: how much of each server's HttpProxy logs the live summary reads
(docs/configuration-logs.md). It connects as the os: section says, so a configuration with logs: needs os:."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hma_check.util.yaml_schema import Schema

_KEYS = ("days", "max_bytes_per_server", "timeout", "pseudonymise_users")


@dataclass(frozen=True)
class LogsSettings:
    days: int = 7
    max_bytes_per_server: int = 1024 ** 3
    timeout: int = 600
    pseudonymise_users: bool = False

    def summary(self) -> dict[str, Any]:
        return {"days": self.days, "max_bytes_per_server": self.max_bytes_per_server, "timeout": self.timeout,
                "pseudonymise_users": self.pseudonymise_users}


def parse_logs_section(raw: Any, context: Any) -> LogsSettings:
    """The ``logs:`` section of the scan configuration (docs/configuration-logs.md); it reads over the os: section's
    WinRM connection, so the configuration must have one (config.parse_config says so)."""
    if raw is None:
        return LogsSettings()
    schema = Schema(context.fail)
    schema.mapping(raw, (), keys=_KEYS, hint="(it may be empty)")
    for key, value in raw.items():
        if key == "pseudonymise_users":
            schema.boolean(value, (key,))
        elif key == "days":
            # Exchange keeps HttpProxy logs for 30 days by default; more than 90 is never there
            schema.integer(value, (key,), 1, 90)
        else:
            schema.integer(value, (key,), 1, 2**62)
    return LogsSettings(**raw)
