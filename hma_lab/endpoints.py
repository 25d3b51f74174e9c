"""The lab's outside-in HTTPS behaviour (hosts, nodes, TLS, certificates) and its ``endpoints:`` section loader."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from hma_check.errors import ConfigError
from hma_check.util.yaml_schema import Schema

PROTOCOLS = ("MAPI", "EWS", "OAB", "Autodiscover", "ActiveSync")
TLS_VERSIONS = ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
VALIDITIES = ("valid", "expired", "not_yet_valid")
ISSUERS = ("lab", "untrusted")
FRONTS = ("exchange", "preauth", "silent")
EXO_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
BALANCER_ADDRESS = "127.0.0.2"  # the lab's load balancer; nodes are 127.0.1.1 and up, 127.0.0.1 the other services
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
Where = tuple  # a key path inside the section: ("hosts", 0, "tls_versions")
Fail = Callable[[Where, str], ConfigError]
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class CertificateSpec:
    """A certificate the lab generates at start from its CA ('lab') or from a CA nobody trusts ('untrusted');
    explicit dates (from a scenario's certificate) win over the coarse ``validity``."""

    names: tuple[str, ...]
    validity: str = "valid"
    issuer: str = "lab"
    not_before: datetime | None = None
    not_after: datetime | None = None


@dataclass(frozen=True)
class VirtualDirectorySpec:
    """What IIS and Exchange challenge with on one protocol path of one server."""

    oauth: bool = True
    challenges: tuple[str, ...] = ("Negotiate", "NTLM")  # the other schemes, in order; Basic gets realm="<host>"
    hung: bool = False   # the application pool hangs: the request is read and never answered


@dataclass(frozen=True)
class NodeSpec:
    """One Exchange server, reached at its own loopback address (the whole 127.0.0.0/8 is loopback on Linux)."""

    name: str
    address: str
    virtual_directories: Mapping[str, VirtualDirectorySpec] = field(
        default_factory=lambda: {protocol: VirtualDirectorySpec() for protocol in PROTOCOLS})
    ssl_offloading: bool = False
    tls_versions: tuple[str, ...] = ("TLSv1.2",)
    certificate: CertificateSpec | None = None  # None: the lab's shared certificate naming every host
    autodiscover_urls: Mapping[str, str | None] = field(default_factory=dict)  # Autodiscover v2: protocol -> Url


@dataclass(frozen=True)
class PreauthSpec:
    """A pre-authenticating reverse proxy in front of Exchange: it answers itself, without Exchange's headers."""

    status: int = 302
    location: str | None = None
    challenges: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostSpec:
    name: str
    nodes: tuple[str, ...]
    front: str = "exchange"  # exchange | preauth | silent (accepts TCP, never answers)
    preauth: PreauthSpec = PreauthSpec()
    tls_versions: tuple[str, ...] | None = None  # None: each node's own
    certificate: CertificateSpec | None = None  # None: each node's own


@dataclass(frozen=True)
class EndpointsSpec:
    """Organisation-wide facts that shape the Bearer challenge, and every node and host."""

    tenant_ids: tuple[str, ...]  # trusted_issuers: 00000001-0000-0000-c000-000000000000@<tenant id>
    evosts_default: bool  # authorization_uri appears only when EvoSts IsDefaultAuthorizationEndpoint
    oauth2_client_profile_enabled: bool  # false: x-ms-diagnostics 4000000 oauth_not_available
    nodes: tuple[NodeSpec, ...]
    hosts: tuple[HostSpec, ...]
    authorization_uri: str | None = None  # the default AuthServer's AuthorizationEndpoint, when it has one

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def host(self, name: str | None) -> HostSpec | None:
        for host in self.hosts:
            if host.name == (name or "").lower().rstrip("."):
                return host
        return None


# ---------------------------------------------------------------------------- the scenario and the Lab
LAB_PROBE_TIMEOUT = 3.0  # seconds: loopback answers in milliseconds; a 'silent' host costs one timeout per node


@dataclass(frozen=True)
class EndpointsSection:
    """A scenario's validated ``endpoints:`` section, applied on top of the derived endpoints when the lab starts;
    ``fail`` keeps the scenario file's positions for any error found then."""

    raw: Any
    fail: Fail

    def apply(self, base: EndpointsSpec) -> EndpointsSpec:
        return apply_endpoints_section(base, self.raw, fail=self.fail)


def load_section(raw: Any, context: Any) -> EndpointsSection:
    """The scenario loader's hook (hma_lab.scenario.SECTION_MODULES): validate the section now, against the
    scenario's servers named and addressed as the lab will, so a mistake is reported with its file and line."""
    from hma_lab.endpoint_derivation import skeleton

    section = EndpointsSection(raw, fail=lambda where, message: context.error(where, message))
    section.apply(skeleton(context.scenario))
    return section


class EndpointsService:
    """The running HTTPS endpoints as the Lab sees a service: what to print, the probes: configuration that routes
    every host to its nodes on loopback (curl's --connect-to), and stop()."""

    def __init__(self, server: Any, extra_hosts: list[str]) -> None:
        self.server = server
        self.secrets: dict[str, str] = {}
        spec = server.spec
        self.endpoints = {"https endpoints": f"{len(spec.hosts)} host(s) on {len(spec.nodes)} node(s), port "
                                            f"{server.port}; CA certificate {server.ca_bundle}"}
        self.scan_config = {"probes": {"hosts": extra_hosts, "connect_to": server.connect_to,
                                       "ca_bundle": str(server.ca_bundle), "timeout": LAB_PROBE_TIMEOUT}}

    def stop(self) -> None:
        self.server.stop()


def start_service(lab: Any) -> EndpointsService:
    """The Lab's hook (hma_lab.runtime.SERVICE_MODULES): endpoints that follow the scenario's Exchange
    configuration, with its endpoints: section on top, started on loopback."""
    from hma_lab.endpoint_derivation import derive_endpoints
    from hma_lab.endpoint_server import EndpointServer

    from hma_lab.httpproxy_log import HttpProxyLogs

    derived = derive_endpoints(lab.scenario, lab.exchange, lab.certificates)
    section = lab.scenario.sections.get("endpoints")
    spec = section.apply(derived) if section is not None else derived
    servers = lab.scenario.servers
    logs = HttpProxyLogs(lab.httpproxy_root, {server.name: server.build for server in servers})
    server = EndpointServer(spec, httpproxy=logs, fqdns={s.name: s.fqdn for s in servers}).start()
    # Hosts only the endpoints: section knows (a proxy, a legacy name) are what a user would name in probes.hosts.
    known = {host.name for host in derived.hosts}
    return EndpointsService(server, [host.name for host in spec.hosts if host.name not in known])


# -------------------------------------------------------------------------------------------- the loader
def apply_endpoints_section(base: EndpointsSpec, raw: Any, *, path: str | None = None,
                            fail: Fail | None = None) -> EndpointsSpec:
    """The ``endpoints:`` section of a scenario: organisation switches, then ``nodes`` and ``hosts`` entries that
    override the same-named entry of ``base`` field by field or add a new one. Each error is one ConfigError from
    ``fail(key path, message)`` (the scenario loader's, with the file and line), by default naming the key path."""
    if raw is None:
        return base
    check = _Checker(fail or _plain_fail(path))
    section = check.keys(raw, (), {"tenant_ids", "evosts_default", "oauth2_client_profile_enabled",
                                               "nodes", "hosts"})
    spec = base
    if "tenant_ids" in section:
        ids = check.string_list(section["tenant_ids"], ("tenant_ids",))
        for i, tenant in enumerate(ids):
            if not _GUID.fullmatch(tenant):
                raise check.fail(("tenant_ids", i), f"{tenant!r} is not a tenant id (a GUID)")
        spec = replace(spec, tenant_ids=tuple(tenant.lower() for tenant in ids))
    for key in ("evosts_default", "oauth2_client_profile_enabled"):
        if key in section:
            spec = replace(spec, **{key: check.boolean(section[key], (key,))})
    if "evosts_default" in section:   # the section decides what the challenge advertises, not the AuthServers
        spec = replace(spec, authorization_uri=None)
    nodes = {node.name: node for node in spec.nodes}
    for i, entry in enumerate(check.list(section.get("nodes", []), ("nodes",))):
        node = _node(check, entry, ("nodes", i), nodes)
        nodes[node.name] = node
    spec = replace(spec, nodes=tuple(nodes.values()))
    seen: dict[str, str] = {}
    for node in spec.nodes:
        if node.address in seen:
            raise check.fail(("nodes",), f"{node.name} and {seen[node.address]} share the address "
                                                f"{node.address}: each node needs its own")
        seen[node.address] = node.name
    hosts = {host.name: host for host in spec.hosts}
    for i, entry in enumerate(check.list(section.get("hosts", []), ("hosts",))):
        host = _host(check, entry, ("hosts", i), hosts, nodes)
        hosts[host.name] = host
    return replace(spec, hosts=tuple(hosts.values()))


def _node(check: "_Checker", raw: Any, where: Where, known: dict[str, NodeSpec]) -> NodeSpec:
    entry = check.keys(raw, where, {"name", "address", "oauth", "challenges", "ssl_offloading", "tls_versions",
                                       "certificate", "autodiscover_urls", "hung"})
    name = check.string(entry.get("name"), (*where, "name"))
    node = known.get(name)
    if node is None:
        if "address" not in entry:
            raise check.fail((*where, "address"), f"a new node {name!r} needs a loopback address")
        node = NodeSpec(name=name, address="127.0.0.1")
    changes: dict[str, Any] = {}
    if "address" in entry:
        address = check.string(entry["address"], (*where, "address"))
        try:
            if not ipaddress.ip_address(address).is_loopback or address in (BALANCER_ADDRESS, "127.0.0.1"):
                raise ValueError
        except ValueError:
            raise check.fail((*where, "address"), f"{address!r} is not a loopback address of its own "
                                                      f"(127.0.0.1 and {BALANCER_ADDRESS} are taken)") from None
        changes["address"] = address
    vdirs = dict(node.virtual_directories)
    for key in ("oauth", "challenges"):
        per_protocol = check.keys(entry.get(key, {}), (*where, key), set(PROTOCOLS))
        for protocol, value in per_protocol.items():
            at = (*where, key, protocol)
            vdir = vdirs.get(protocol, VirtualDirectorySpec())
            vdirs[protocol] = replace(vdir, oauth=check.boolean(value, at)) if key == "oauth" else \
                replace(vdir, challenges=tuple(check.string_list(value, at)))
    # paths whose application pool hangs on this node: the request is read and never answered
    for index, protocol in enumerate(check.string_list(entry.get("hung", []), (*where, "hung"))):
        if protocol not in PROTOCOLS:
            raise check.fail((*where, "hung", index), f"must be one of {', '.join(PROTOCOLS)}")
        vdirs[protocol] = replace(vdirs.get(protocol, VirtualDirectorySpec()), hung=True)
    changes["virtual_directories"] = vdirs
    if "ssl_offloading" in entry:
        changes["ssl_offloading"] = check.boolean(entry["ssl_offloading"], (*where, "ssl_offloading"))
    if "tls_versions" in entry:
        changes["tls_versions"] = check.tls_versions(entry["tls_versions"], (*where, "tls_versions"))
    if "certificate" in entry:
        changes["certificate"] = check.certificate(entry["certificate"], (*where, "certificate"), node.certificate)
    if "autodiscover_urls" in entry:
        urls = check.keys(entry["autodiscover_urls"], (*where, "autodiscover_urls"), {"ActiveSync", "EWS"})
        changes["autodiscover_urls"] = {**node.autodiscover_urls, **{
            protocol: None if url is None else check.string(url, (*where, "autodiscover_urls", protocol))
            for protocol, url in urls.items()}}
    return replace(node, **changes)


def _host(check: "_Checker", raw: Any, where: Where, known: dict[str, HostSpec],
          nodes: dict[str, NodeSpec]) -> HostSpec:
    entry = check.keys(raw, where, {"name", "nodes", "front", "preauth", "tls_versions", "certificate"})
    name = check.host_name(entry.get("name"), (*where, "name"))
    host = known.get(name) or HostSpec(name=name, nodes=tuple(nodes))
    changes: dict[str, Any] = {}
    if "nodes" in entry:
        names = check.string_list(entry["nodes"], (*where, "nodes"))
        for i, node in enumerate(names):
            if node not in nodes:
                raise check.fail((*where, "nodes", i), f"unknown node {node!r} (known: {', '.join(nodes)})")
        changes["nodes"] = tuple(names)
    if "front" in entry:
        changes["front"] = check.choice(entry["front"], (*where, "front"), FRONTS)
    if "preauth" in entry:
        pre = check.keys(entry["preauth"], (*where, "preauth"), {"status", "location", "challenges"})
        status = pre.get("status", 302)
        if status not in (302, 401, 403):
            raise check.fail((*where, "preauth", "status"), "must be 302, 401 or 403")
        location = pre.get("location")
        changes["preauth"] = PreauthSpec(
            status=status,
            location=None if location is None else check.string(location, (*where, "preauth", "location")),
            challenges=tuple(check.string_list(pre.get("challenges", []), (*where, "preauth", "challenges"))))
    if "tls_versions" in entry:
        changes["tls_versions"] = check.tls_versions(entry["tls_versions"], (*where, "tls_versions"))
    if "certificate" in entry:
        changes["certificate"] = check.certificate(entry["certificate"], (*where, "certificate"), host.certificate,
                                                   default_names=(name,))
    return replace(host, **changes)


def _plain_fail(path: str | None) -> Fail:
    def fail(where: Where, message: str) -> ConfigError:
        key = "endpoints" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in where)
        return ConfigError(f"{key}: {message}", path=path)
    return fail


class _Checker(Schema):
    """The shared YAML schema reader, plus the endpoint section's own types (host names, TLS ranges, certificates)."""

    def keys(self, raw: Any, where: Where, allowed: set[str]) -> Mapping[str, Any]:
        return self.mapping(raw, where, keys=sorted(allowed))

    def list(self, raw: Any, where: Where) -> list[Any]:
        return self.list_of(raw, where)

    def string(self, raw: Any, where: Where) -> str:
        return self.text(raw, where, one_line=True)

    def string_list(self, raw: Any, where: Where) -> list[str]:
        return self.list_of(raw, where, self.string, what="strings")

    def choice(self, raw: Any, where: Where, choices: tuple[str, ...]) -> str:
        return self.one_of(raw, where, choices)

    def host_name(self, raw: Any, where: Where) -> str:
        name = self.string(raw, where)
        if not _NAME.fullmatch(name.rstrip(".")):
            raise self.fail(where, f"{name!r} is not a host name")
        return name.lower().rstrip(".")

    def tls_versions(self, raw: Any, where: Where) -> tuple[str, ...]:
        versions = [self.choice(item, (*where, i), TLS_VERSIONS) for i, item in enumerate(self.list(raw, where))]
        indexes = sorted(TLS_VERSIONS.index(version) for version in set(versions))
        if not indexes or indexes != list(range(indexes[0], indexes[-1] + 1)):
            raise self.fail(where, "must be a non-empty, contiguous range of versions (OpenSSL sets a minimum "
                                   "and a maximum)")
        return tuple(TLS_VERSIONS[i] for i in indexes)

    def certificate(self, raw: Any, where: Where, current: CertificateSpec | None,
                    default_names: tuple[str, ...] = ()) -> CertificateSpec:
        entry = self.keys(raw, where, {"names", "validity", "issuer"})
        names = tuple(self.host_name(name, (*where, "names", i)) if not str(name).startswith("*.") else
                      "*." + self.host_name(str(name)[2:], (*where, "names", i))
                      for i, name in enumerate(self.list(entry["names"], (*where, "names")))) \
            if "names" in entry else (current.names if current else default_names)
        if not names:
            raise self.fail((*where, "names"), "a certificate needs at least one name")
        dated = current is not None and "validity" not in entry  # a new validity replaces the scenario's dates
        return CertificateSpec(
            names=names,
            validity=self.choice(entry.get("validity", current.validity if current else "valid"), (*where, "validity"),
                                 VALIDITIES),
            issuer=self.choice(entry.get("issuer", current.issuer if current else "lab"), (*where, "issuer"), ISSUERS),
            not_before=current.not_before if dated else None, not_after=current.not_after if dated else None)
