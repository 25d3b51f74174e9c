"""The ``os:`` section of the scan configuration: how to reach every Exchange server's WinRM endpoint and sign in."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from hma_check.collect.exchange.config import (CONNECTION_KEYS, HOST, Connection, ConnectionDefaults, check_keys,
                                               parse_connection)

DEFAULT_PASSWORD_ENV = "HMA_CHECK_OS_PASSWORD"
# WinRM's own defaults: HTTP on 5985 with Kerberos or NTLM message encryption (AllowUnencrypted=false), HTTPS on
# 5986 when a listener has a certificate (Microsoft Learn: "Installation and configuration for Windows Remote
# Management"). Eight servers at once keeps a scan of 200 servers short without looking like a scan storm.
OS_DEFAULTS = ConnectionDefaults(ssl=False, https_port=5986, http_port=5985, path="wsman",
                                 password_env=DEFAULT_PASSWORD_ENV, concurrency=8, timeout=60)
_KEYS = (*CONNECTION_KEYS, "hosts")
_HOST_PORT = re.compile(rf"(?P<host>{HOST.pattern})(?::(?P<port>\d{{1,5}}))?")


@dataclass(frozen=True)
class OsSettings(Connection):
    """One connection template for every server; ``for_server`` fills in where that server's WinRM listens."""

    hosts: dict[str, tuple[str, int | None]] = field(default_factory=dict)   # lower-case Name -> (host, port)
    server: str = ""    # set by for_server: the host this copy connects to

    def for_server(self, name: str, fqdn: str | None) -> "OsSettings":
        """The server's address: the configured override, else its FQDN from Get-ExchangeServer, else its name."""
        host, port = self.hosts.get(name.lower(), (fqdn or name, None))
        return replace(self, server=host, port=port or self.port)

    def summary(self) -> dict[str, Any]:
        return {"port": self.port, "ssl": self.ssl, "path": self.path, **super().summary(),
                "hosts": {name: f"{host}:{port}" if port else host for name, (host, port) in self.hosts.items()}}


def parse_os_section(raw: Any, context: Any) -> OsSettings:
    fail = context.fail
    if raw is None:
        raw = {}   # "os:" alone: every default (WinRM over HTTP with message encryption, Negotiate)
    if not isinstance(raw, dict):
        raise fail((), "must be a mapping (it may be empty: every key has a default)")
    check_keys(raw, _KEYS, fail)
    connection = parse_connection(raw, context, OS_DEFAULTS)
    return OsSettings(**connection, hosts=_hosts(raw.get("hosts"), fail))


def _hosts(value: Any, fail: Any) -> dict[str, tuple[str, int | None]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(("hosts",), "must map Exchange server names to host or host:port")
    out: dict[str, tuple[str, int | None]] = {}
    for name, address in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", name):
            raise fail(("hosts", name), "must be an Exchange server name (its Name in Get-ExchangeServer)")
        match = _HOST_PORT.fullmatch(address) if isinstance(address, str) else None
        port = int(match.group("port")) if match and match.group("port") else None
        if match is None or (port is not None and not 1 <= port <= 65535):
            raise fail(("hosts", name), "must be a host name or address, optionally with :port")
        if name.lower() in out:
            raise fail(("hosts", name), "is listed twice")
        out[name.lower()] = (match.group("host"), port)
    return out
