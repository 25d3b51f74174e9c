"""Which hosts the probes visit: every Exchange URL host of the snapshot plus the user's, and what stayed unknown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hma_check.collect.probes.config import ProbeSettings, is_host_name, normalise_host
from hma_check.contract.snapshot import Snapshot, source_key

# The HMA protocols and the path each Bearer probe asks for (hma-checks.md P1; the Outlook for iOS and Android
# troubleshooting in https://learn.microsoft.com/exchange/clients/outlook-for-ios-and-android/use-hybrid-modern-auth
# documents it for ActiveSync; the other paths are the same virtual directories' entry points).
PROTOCOL_PATHS: dict[str, str] = {
    "MAPI": "/mapi/",
    "EWS": "/EWS/Exchange.asmx",
    "OAB": "/OAB/",
    "Autodiscover": "/Autodiscover/Autodiscover.xml",
    "ActiveSync": "/Microsoft-Server-ActiveSync",
}
# The per-server sources whose InternalUrl/ExternalUrl name the hosts (configure-exchange-server-for-hybrid-modern-
# authentication, "Add on-premises web service URLs as SPNs").
URL_SOURCES: dict[str, str] = {
    "exchange.mapi_virtual_directories": "MAPI",
    "exchange.web_services_virtual_directories": "EWS",
    "exchange.oab_virtual_directories": "OAB",
    "exchange.autodiscover_virtual_directories": "Autodiscover",
    "exchange.activesync_virtual_directories": "ActiveSync",
}
CLIENT_ACCESS = "exchange.client_access_services"


@dataclass
class HostTarget:
    """One host:port to probe, with every place its name came from."""

    host: str
    port: int
    origins: list[str] = field(default_factory=list)
    autodiscover: bool = False  # an Autodiscover name: Autodiscover v2 is asked here

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "origins": list(self.origins), "autodiscover": self.autodiscover}


@dataclass
class Unknown:
    """A source whose host names could not be read, so the hosts it holds were not probed."""

    source: str
    reason: str
    autodiscover: bool = False

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


@dataclass
class ProbePlan:
    targets: list[HostTarget] = field(default_factory=list)
    unknown: list[Unknown] = field(default_factory=list)
    ignored: list[dict[str, str]] = field(default_factory=list)  # values that are not a usable https URL

    def add(self, host: str, port: int, origin: str, *, autodiscover: bool) -> None:
        for target in self.targets:
            if (target.host, target.port) == (host, port):
                break
        else:
            target = HostTarget(host, port)
            self.targets.append(target)
        if origin not in target.origins:
            target.origins.append(origin)
        target.autodiscover = target.autodiscover or autodiscover


def plan_probes(snapshot: Snapshot, settings: ProbeSettings) -> ProbePlan:
    """The hosts to probe, read from the snapshot's Exchange sources (no I/O). A source that failed or is missing
    is listed as unknown with its reason: its hosts are never guessed."""
    plan = ProbePlan()
    servers = snapshot.sources.get("exchange.servers")
    if servers is not None:
        if not servers.ok:
            plan.unknown.append(Unknown("exchange.servers", _failure(servers), autodiscover=True))
        else:
            for name in _probe_servers(servers.data):
                for source_name, protocol in URL_SOURCES.items():
                    _read_url_source(snapshot, plan, source_key(source_name, name), protocol)
        _read_client_access(snapshot, plan)
    for host, port in settings.hosts:
        plan.add(host, port, "probes.hosts", autodiscover=True)
    return plan


def _probe_servers(servers: Any) -> list[str]:
    """Every server that serves client protocols: Edge Transport servers have no virtual directories."""
    names = []
    for server in servers if isinstance(servers, list) else []:
        if isinstance(server, dict) and isinstance(server.get("Name"), str) and server.get("IsEdgeServer") is not True:
            names.append(server["Name"])
    return names


def _read_url_source(snapshot: Snapshot, plan: ProbePlan, key: str, protocol: str) -> None:
    result = snapshot.sources.get(key)
    autodiscover = protocol == "Autodiscover"
    if result is None:
        plan.unknown.append(Unknown(key, "not collected", autodiscover=autodiscover))
        return
    if result.status == "skipped":
        return  # the Exchange collector decided the source does not apply to this server
    if not result.ok:
        plan.unknown.append(Unknown(key, _failure(result), autodiscover=autodiscover))
        return
    for vdir in result.data if isinstance(result.data, list) else []:
        for prop in ("InternalUrl", "ExternalUrl"):
            _add_url(plan, vdir.get(prop) if isinstance(vdir, dict) else None, f"{key} {prop}",
                     autodiscover=autodiscover)


def _read_client_access(snapshot: Snapshot, plan: ProbePlan) -> None:
    result = snapshot.sources.get(CLIENT_ACCESS)
    if result is None:
        plan.unknown.append(Unknown(CLIENT_ACCESS, "not collected", autodiscover=True))
    elif result.ok:
        for service in result.data if isinstance(result.data, list) else []:
            if isinstance(service, dict):
                _add_url(plan, service.get("AutodiscoverServiceInternalUri"),
                         f"{CLIENT_ACCESS} {service.get('Name')} AutodiscoverServiceInternalUri", autodiscover=True)
    elif result.status != "skipped":
        plan.unknown.append(Unknown(CLIENT_ACCESS, _failure(result), autodiscover=True))


def _add_url(plan: ProbePlan, url: Any, origin: str, *, autodiscover: bool) -> None:
    """An empty URL is a fact (the property is not set) and names no host; a value that is not an http(s) URL with
    a host name is recorded as ignored. Probes always use https: that is what a client publishing HMA needs."""
    if url is None or url == "":
        return
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        port = parts.port if parts else None
    except ValueError:
        parts = port = None
    host = parts.hostname if parts else None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host or not is_host_name(host):
        plan.ignored.append({"origin": origin, "value": str(url)[:200]})
        return
    port = port if parts.scheme.lower() == "https" else None  # an http URL: its https twin is on 443
    plan.add(normalise_host(host), port or 443, origin, autodiscover=autodiscover)


def _failure(result: Any) -> str:
    return f"{result.status}: {result.error}"
