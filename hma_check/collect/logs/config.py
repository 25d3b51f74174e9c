"""The ``logs:`` section of the scan configuration: how much of each server's HttpProxy logs the live summary reads
(docs/configuration-logs.md). It connects as the os: section says, so a configuration with logs: needs os:."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    if not isinstance(raw, dict):
        raise context.fail((), f"must be a mapping with any of: {', '.join(_KEYS)} (it may be empty)")
    for key, value in raw.items():
        if key not in _KEYS:
            raise context.fail((key,), f"unknown key; expected one of: {', '.join(_KEYS)}")
        if key == "pseudonymise_users":
            if not isinstance(value, bool):
                raise context.fail((key,), "must be true or false")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise context.fail((key,), "must be a whole number above 0")
    if raw.get("days", 7) > 90:
        raise context.fail(("days",), "at most 90: Exchange keeps HttpProxy logs for 30 days by default")
    return LogsSettings(**raw)
