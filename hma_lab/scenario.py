"""Scenario files: the lab's YAML description of an Exchange organisation, validated with file-and-line errors.

The lab's Exchange side owns every section except ``tenants`` and ``endpoints``: those go to the ``load_section(data,
context)`` of the module that serves them (``hma_lab.tenants``, ``hma_lab.endpoints``). docs/scenarios.md
describes the format.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hma_check.errors import InputError
from hma_lab.exchange_types import KINDS, VDIR_KINDS, check_value
from hma_lab.windows_spec import check_registry, check_server_fact
from hma_check.util.yaml_schema import Schema
from hma_check.util.yaml_source import Where, YamlDoc, load_yaml_file, merge_docs

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
VERDICTS = ("READY", "NOT_READY", "INCOMPLETE")
FINDING_STATUSES = ("PASS", "FAIL", "WARN", "NOTE", "ERROR", "NOT_APPLICABLE")
SOURCE_STATUSES = ("ok", "error", "skipped")
MAX_SERVERS = 2000

# Sections validated by the module that serves them: its load_section(data, context) gets the raw section.
SECTION_MODULES: dict[str, str] = {
    "tenants": "hma_lab.tenants",
    "endpoints": "hma_lab.endpoints",
    "clients": "hma_lab.clients",
}


class ScenarioError(InputError):
    """A scenario file fails validation."""


# ----------------------------------------------------------------------------------------------------------- model

@dataclass
class CertificateSpec:
    id: str
    subject: str
    sans: list[str]
    issuer: str | None
    not_before: datetime
    not_after: datetime
    key_size: int
    signature_hash: str
    server_auth: bool

    @property
    def per_server(self) -> bool:
        return any("{" in text for text in [self.subject, *self.sans])


@dataclass
class ServerSpec:
    name: str
    fqdn: str
    build: tuple[int, int, int, int]
    roles: list[str]
    site: str
    edition: str
    internet_web_proxy: str | None
    certificates: list[str]
    virtual_directories: dict[str, dict[str, Any]]   # kind -> vendor properties (IIS truth)
    ad_properties: dict[str, dict[str, Any]]         # kind -> what AD says instead (-ADPropertiesOnly)
    absent: set[str]                                 # kinds of virtual directory this server does not have
    registry: dict[str, Any]                         # os.tls_registry's shape; null or missing = not in the registry
    extra: dict[str, Any]                            # exsetup_version, operating_system, winrm, iis: hma_lab.windows

    @property
    def is_edge(self) -> bool:
        return "Edge" in self.roles

    @property
    def serves_clients(self) -> bool:
        """Exchange 2013 or later and not Edge Transport: the server has the client access virtual directories."""
        return not self.is_edge and self.build[0] >= 15

    def has_virtual_directory(self, kind: str) -> bool:
        """2013 and later: every client access directory. An Exchange 2010 Client Access server has its own (OWA, ECP,
        EWS, OAB, Autodiscover, ActiveSync, RPC) but no /mapi, which arrived with Exchange 2013 SP1."""
        if kind in self.absent or self.is_edge:
            return False
        if self.build[0] == 14:
            return "ClientAccess" in self.roles and kind != "mapi"
        return self.serves_clients

    @property
    def version_text(self) -> str:
        major, minor, build, revision = self.build
        return f"Version {major}.{minor} (Build {build}.{revision})"


@dataclass
class Fault:
    """One injected failure: which calls it hits (cmdlet and server globs, a count) and what happens."""

    effect: str              # error | not_found | hang | delay | break_pool | throttle | http_status
    value: Any = None
    cmdlet: str = "*"
    server: str = "*"
    action: str = "*"        # WSMan action for http_status
    times: int | None = None
    after: int = 0
    hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def strikes(self) -> bool:
        """Count one matching call; True when this call is hit (past the first ``after``, within ``times``).

        The count is shared by every session (Exchange's, every server's WinRM) that reaches the same fault.
        """
        with self._lock:
            self.hits += 1
            hits = self.hits
        if hits <= self.after:
            return False
        return self.times is None or hits <= self.after + self.times


@dataclass
class Scenario:
    name: str
    description: str
    source: str
    expect: dict[str, Any]
    organization: dict[str, Any]
    objects: dict[str, list[dict[str, Any]]]         # cmdlet kind -> vendor property dicts (org-wide objects)
    auth_config: dict[str, Any]
    hybrid_configuration: dict[str, Any] | None
    certificates: dict[str, CertificateSpec]
    servers: list[ServerSpec]
    latency: dict[str, Any]
    max_concurrency: int
    faults: list[Fault]
    username: str
    sections: dict[str, Any] = field(default_factory=dict)    # tenants, endpoints (their owners' model or raw)
    options: dict[str, Any] = field(default_factory=dict)     # the demo scan's options: section (owa_ecp...)
    captures: dict[str, list[Any]] = field(default_factory=dict)   # cmdlet (lower case) -> captures.Captured

    def server(self, name: str) -> ServerSpec | None:
        lowered = name.lower()
        return next((s for s in self.servers if s.name.lower() == lowered or s.fqdn.lower() == lowered), None)

    def cmdlet_fault(self, cmdlet: str, server: ServerSpec | None) -> Fault | None:
        """The first fault that hits this call of ``cmdlet`` (on ``server``, None when the call names none)."""
        for fault in self.faults:
            if fault.effect == "http_status" or not fnmatch.fnmatch(cmdlet.lower(), fault.cmdlet.lower()):
                continue
            if fault.server != "*" and (server is None or not fnmatch.fnmatch(server.name.lower(),
                                                                             fault.server.lower())):
                continue
            if fault.strikes():
                return fault
        return None

    def http_fault(self, action: str) -> int | None:
        """The HTTP status a fault answers instead: ``action`` is "*" once per request (before the SOAP body is
        read), then the request's WSMan action."""
        for fault in self.faults:
            if fault.effect != "http_status" or (action == "*") != (fault.action == "*"):
                continue
            if fault.action != "*" and fault.action.lower() != action.lower():
                continue
            if fault.strikes():
                return int(fault.value)
        return None


# ----------------------------------------------------------------------------------------------------------- loading

def scenario_names() -> list[str]:
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.yaml"))


def scenario_path(name: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or not os.path.isfile(SCENARIO_DIR / f"{name}.yaml"):
        raise ScenarioError(f"unknown scenario {name!r}; the shipped ones are: {', '.join(scenario_names())}")
    return SCENARIO_DIR / f"{name}.yaml"


def load_scenario(name: str) -> Scenario:
    return load_scenario_file(scenario_path(name))


def load_scenario_file(path: str | Path) -> Scenario:
    return _Parser(_load_with_bases(Path(path), ())).parse()


def _load_with_bases(path: Path, chain: tuple[Path, ...]) -> YamlDoc:
    """Read a scenario and, when it says ``extends: <shipped name or relative path>``, lay it over its base."""
    doc = load_yaml_file(path, ScenarioError)
    if not isinstance(doc.data, dict) or "extends" not in doc.data:
        return doc
    base_ref = doc.data.pop("extends")
    if not isinstance(base_ref, str) or not base_ref.strip():
        raise doc.error(("extends",), "must be the name of a shipped scenario or a path to a scenario file")
    # os.path: a name too long to be a file is "no such file", not an exception.
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", base_ref) and os.path.isfile(SCENARIO_DIR / f"{base_ref}.yaml"):
        base_path = SCENARIO_DIR / f"{base_ref}.yaml"
    else:
        base_path = (path.parent / base_ref).resolve()
        if not os.path.isfile(base_path):
            raise doc.error(("extends",), f"no shipped scenario or file {base_ref!r}")
    if base_path.resolve() in chain or len(chain) >= 8:
        raise doc.error(("extends",), "scenarios extend each other in a loop")
    base = _load_with_bases(base_path, (*chain, path.resolve()))
    Schema(base.error).mapping(base.data, ())
    # What a scenario expects is its own: a variant never inherits its base's expectations.
    base.data.pop("expect", None)
    return merge_docs(base, doc)


@dataclass
class SectionContext:
    """What a registered section loader gets: the lab's own part of the scenario and a way to fail with a position."""

    scenario: Scenario
    doc: YamlDoc
    section: str

    def error(self, where: Where, message: str) -> InputError:
        return self.doc.error((self.section, *where), message)


_TOP = ("name", "description", "expect", "credentials", "organization", "auth_servers", "partner_applications",
        "auth_config", "hybrid_configuration", "intra_organization_connectors", "setting_overrides",
        "accepted_domains", "mailboxes", "admins", "authentication_policies", "activesync", "certificates",
        "server_defaults", "servers", "latency", "throttling", "faults", "options", "captures", *SECTION_MODULES)
_SERVER_KEYS = ("name", "fqdn", "count", "start", "build", "roles", "site", "edition", "internet_web_proxy",
                "certificates", "virtual_directories", "registry", "exsetup_version", "operating_system", "winrm",
                "iis", "autodiscover_service_internal_uri")
_UNSET = object()
_ROLES = ("Mailbox", "ClientAccess", "Edge", "HubTransport", "UnifiedMessaging")
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_TEMPLATE = re.compile(r"\{(name|fqdn|n|namespace|domain)(?::0?(\d))?\}")


class _Parser:
    def __init__(self, doc: YamlDoc) -> None:
        self.doc = doc
        self.schema = Schema(self.fail)
        self.now = datetime.now(timezone.utc).replace(microsecond=0)

    def fail(self, where: Where, message: str) -> InputError:
        return self.doc.error(where, message)

    # ------------------------------------------------------------------------------------------ primitives

    def mapping(self, value: Any, where: Where, allowed: tuple[str, ...] | None = None,
                required: tuple[str, ...] = ()) -> dict[str, Any]:
        return self.schema.mapping(value, where, keys=allowed, required=required, extensions="x-")

    def seq(self, value: Any, where: Where) -> list[Any]:
        return [] if value is None else self.schema.list_of(value, where)

    def text(self, value: Any, where: Where, *, allow_empty: bool = False) -> str:
        return self.schema.text(value, where, empty=allow_empty, one_line=True)

    def host(self, value: Any, where: Where) -> str:
        """A DNS host name (RFC 1123 labels): the lab serves and signs certificates for it, so nothing else will do."""
        text = self.text(value, where)
        if len(text) > 253 or not _HOST_NAME.fullmatch(text):
            raise self.fail(where, "must be a DNS host name such as ex01.contoso.local (letters, digits, '-' and '.')")
        return text

    def integer(self, value: Any, where: Where, low: int, high: int) -> int:
        return self.schema.integer(value, where, low, high)

    def duration(self, value: Any, where: Where) -> float:
        """Seconds, from a number or '150ms', '2s', '1m'."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 3600:
            return float(value)
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m)\s*", value) if isinstance(value, str) else None
        if not match:
            raise self.fail(where, "must be a duration such as 150ms, 2s or 1m")
        seconds = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match.group(2)]
        if seconds > 3600:
            raise self.fail(where, "must be at most one hour")
        return seconds

    def moment(self, value: Any, where: Where) -> datetime:
        """An ISO date, or an offset from now such as -30d, +2y, +12h (certificates stay valid as time passes)."""
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
        moved = offset_moment(value, self.now)
        if moved is not None:
            return moved
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                pass
            else:
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        raise self.fail(where, "must be an ISO 8601 date or an offset from now such as -30d, +2y or +12h")

    def properties(self, kind: str, value: Any, where: Where, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        spec = KINDS[kind].properties
        props = self.mapping(value, where)
        out: dict[str, Any] = {}
        for name, item in props.items():
            if name.startswith("x-") or name in extra:
                continue
            if name not in spec:
                near = [p for p in spec if p.lower() == name.lower()]
                hint = f" (did you mean {near[0]}?)" if near else ""
                raise self.fail((*where, name), f"not a property of {kind}{hint}")
            check_value(spec[name], item, (*where, name), self.schema)
            if isinstance(item, (date, datetime)):
                item = self.moment(item, (*where, name))
            elif spec[name] == "dt" and isinstance(item, str):
                item = self.moment(item, (*where, name))
            elif spec[name] == "mv" and item is not None:
                item = [str(entry) for entry in item]
            elif isinstance(item, str):
                self.text(item, (*where, name), allow_empty=True)
            out[name] = item
        return out

    # ------------------------------------------------------------------------------------------ sections

    def parse(self) -> Scenario:
        root = self.mapping(self.doc.data, (), _TOP, required=("name", "organization", "servers"))
        name = self.text(root["name"], ("name",))
        organization = self.organization(root["organization"])
        certificates = self.certificates(root.get("certificates") or {})
        servers = self.servers(root, organization, certificates)
        objects: dict[str, list[dict[str, Any]]] = {}
        for section, kind in (("auth_servers", "AuthServer"), ("partner_applications", "PartnerApplication"),
                              ("intra_organization_connectors", "IntraOrganizationConnector"),
                              ("setting_overrides", "SettingOverride"), ("accepted_domains", "AcceptedDomain"),
                              ("authentication_policies", "AuthenticationPolicy")):
            objects[kind] = [self.properties(kind, item, (section, index))
                             for index, item in enumerate(self.seq(root.get(section), (section,)))]
            for index, item in enumerate(objects[kind]):
                if not isinstance(item.get("Name"), str) or not item["Name"]:
                    raise self.fail((section, index), "missing required property Name")
        objects["Mailbox"] = self.mailboxes(root.get("mailboxes"), organization)
        objects["User"] = [self.properties("User", item, ("admins", index))
                           for index, item in enumerate(self.seq(root.get("admins"), ("admins",)))]
        activesync = self.mapping(root.get("activesync") or {}, ("activesync",),
                                  ("organization_settings", "device_access_rules"))
        objects["ActiveSyncOrganizationSettings"] = [self.properties(
            "ActiveSyncOrganizationSettings", activesync.get("organization_settings") or {},
            ("activesync", "organization_settings"))]
        objects["ActiveSyncDeviceAccessRule"] = [
            self.properties("ActiveSyncDeviceAccessRule", item, ("activesync", "device_access_rules", index))
            for index, item in enumerate(self.seq(activesync.get("device_access_rules"),
                                                  ("activesync", "device_access_rules")))]
        auth_config = self.auth_config(root.get("auth_config") or {}, certificates)
        hybrid = root.get("hybrid_configuration")
        hybrid_configuration = None
        if hybrid is not None:
            extra = ("tls_certificate",)
            hybrid_configuration = self.properties("HybridConfiguration", hybrid, ("hybrid_configuration",), extra)
            if "tls_certificate" in hybrid:
                ref = self.text(hybrid["tls_certificate"], ("hybrid_configuration", "tls_certificate"))
                if ref not in certificates:
                    raise self.fail(("hybrid_configuration", "tls_certificate"), f"no certificate {ref!r}")
                hybrid_configuration["tls_certificate"] = ref
        username = self.credentials(root.get("credentials"), organization)
        latency = self.latency(root.get("latency") or {})
        throttling = self.mapping(root.get("throttling") or {}, ("throttling",), ("max_concurrency",))
        scenario = Scenario(
            name=name, description=self.text(root.get("description") or name, ("description",)),
            source=self.doc.source, expect=self.expect(root.get("expect") or {}), organization=organization,
            objects=objects, auth_config=auth_config, hybrid_configuration=hybrid_configuration,
            certificates=certificates, servers=servers, latency=latency,
            max_concurrency=self.integer(throttling.get("max_concurrency", 18), ("throttling", "max_concurrency"),
                                         1, 1000),
            faults=self.faults(root.get("faults"), servers), username=username,
            options=self.options(root.get("options")), captures=self.captures(root.get("captures")))
        for section, module_name in SECTION_MODULES.items():
            if section in root:
                loader = importlib.import_module(module_name).load_section
                scenario.sections[section] = loader(root[section], SectionContext(scenario, self.doc, section))
        return scenario

    def organization(self, value: Any) -> dict[str, Any]:
        where = ("organization",)
        org = self.mapping(value, where, ("name", "ad_domain", "netbios_name", "domain_controller", "namespace",
                                          "autodiscover_namespace", "config", "utc_offset"),
                           required=("name", "ad_domain"))
        out = {key: self.text(org[key], (*where, key)) for key in ("name", "ad_domain")}
        domain = out["ad_domain"]
        if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", domain):
            raise self.fail((*where, "ad_domain"), "must be a DNS domain name such as contoso.local")
        out["netbios_name"] = self.text(org.get("netbios_name") or domain.split(".")[0].upper(),
                                        (*where, "netbios_name"))
        out["domain_controller"] = self.host(org.get("domain_controller") or f"dc01.{domain}",
                                             (*where, "domain_controller"))
        out["namespace"] = self.host(org.get("namespace") or f"mail.{domain}", (*where, "namespace"))
        out["autodiscover_namespace"] = self.host(org.get("autodiscover_namespace") or f"autodiscover.{domain}",
                                                  (*where, "autodiscover_namespace"))
        out["config"] = self.properties("OrganizationConfig", org.get("config") or {}, (*where, "config"))
        # The servers' time zone: Exchange sends local times (WhenChanged, NextCertificateEffectiveDate...) with it.
        offset = str(org.get("utc_offset") or "+00:00")
        match = re.fullmatch(r"([+-])(\d\d):(\d\d)", offset)
        if not match or int(match.group(2)) > 14 or int(match.group(3)) > 59:
            raise self.fail((*where, "utc_offset"), "must be an offset from UTC such as +01:00 or -08:00")
        minutes = (int(match.group(2)) * 60 + int(match.group(3))) * (1 if match.group(1) == "+" else -1)
        out["local_time"] = timezone(timedelta(minutes=minutes), f"UTC{offset}")
        return out

    def certificates(self, value: Any) -> dict[str, CertificateSpec]:
        out = {}
        for cert_id, spec in self.mapping(value, ("certificates",)).items():
            where = ("certificates", cert_id)
            if not re.fullmatch(r"[A-Za-z0-9_-]+", cert_id):
                raise self.fail(where, "certificate ids use letters, digits, '-' and '_' only")
            spec = self.mapping(spec, where, ("subject", "sans", "issuer", "not_before", "not_after", "key_size",
                                              "signature_hash", "server_auth"), required=("subject", "not_after"))
            sans = [self.text(item, (*where, "sans", index)) for index, item in
                    enumerate(self.seq(spec.get("sans"), (*where, "sans")))]
            subject = self.text(spec["subject"], (*where, "subject"))
            if not subject.upper().startswith("CN="):
                raise self.fail((*where, "subject"), "must be a distinguished name starting with CN=")
            not_before = self.moment(spec.get("not_before", "-30d"), (*where, "not_before"))
            not_after = self.moment(spec["not_after"], (*where, "not_after"))
            if not_after <= not_before:
                raise self.fail((*where, "not_after"), "must be after not_before")
            key_size = self.integer(spec.get("key_size", 2048), (*where, "key_size"), 1024, 4096)
            hash_name = spec.get("signature_hash", "sha256")
            if hash_name not in ("sha1", "sha256", "sha384"):
                raise self.fail((*where, "signature_hash"), "must be sha1, sha256 or sha384")
            server_auth = self.schema.boolean(spec.get("server_auth", True), (*where, "server_auth"))
            issuer = spec.get("issuer")
            out[cert_id] = CertificateSpec(cert_id, subject, sans,
                                           self.text(issuer, (*where, "issuer")) if issuer is not None else None,
                                           not_before, not_after, key_size, hash_name, server_auth)
        return out

    def servers(self, root: dict[str, Any], org: dict[str, Any],
                certificates: dict[str, CertificateSpec]) -> list[ServerSpec]:
        defaults = self.mapping(root.get("server_defaults") or {}, ("server_defaults",),
                                tuple(k for k in _SERVER_KEYS if k not in ("name", "fqdn", "count", "start")))
        entries = self.seq(root["servers"], ("servers",))
        if not entries:
            raise self.fail(("servers",), "an organisation needs at least one server")
        out: list[ServerSpec] = []
        for index, entry in enumerate(entries):
            where = ("servers", index)
            entry = self.mapping(entry, where, _SERVER_KEYS, required=("name",))
            count = self.integer(entry.get("count", 1), (*where, "count"), 1, MAX_SERVERS)
            start = self.integer(entry.get("start", 1), (*where, "start"), 0, 99999)
            if count > 1 and "{n" not in str(entry["name"]):
                raise self.fail((*where, "name"), "a server entry with count needs {n} in its name, e.g. EX{n:02}")
            for n in range(start, start + count):
                out.append(self.server(entry, defaults, where, n, org, certificates))
                if len(out) > MAX_SERVERS:
                    raise self.fail(where, f"more than {MAX_SERVERS} servers")
        seen: set[str] = set()
        for server in out:
            if server.name.lower() in seen:
                raise self.fail(("servers",), f"duplicate server name {server.name}")
            seen.add(server.name.lower())
        return out

    def server(self, entry: dict[str, Any], defaults: dict[str, Any], where: Where, n: int, org: dict[str, Any],
               certificates: dict[str, CertificateSpec]) -> ServerSpec:
        values = {"n": n, "namespace": org["namespace"], "domain": org["ad_domain"]}
        name = _template(self.text(entry["name"], (*where, "name")), values)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", name):
            raise self.fail((*where, "name"), f"{name!r} is not a server name (letters, digits and '-')")
        values["name"] = name
        fqdn = self.host(_template(self.text(entry.get("fqdn") or f"{name.lower()}.{org['ad_domain']}",
                                             (*where, "fqdn")), values), (*where, "fqdn"))
        values["fqdn"] = fqdn

        def pick(key: str, fallback: Any) -> tuple[Any, Where]:
            if key in entry:
                return entry[key], (*where, key)
            if key in defaults:
                return defaults[key], ("server_defaults", key)
            return fallback, (*where, key)

        build_value, build_where = pick("build", "15.2.1544.4")
        build = _parse_build(str(build_value))
        if build is None:
            raise self.fail(build_where, "must be a build number such as 15.2.1544.4")
        roles_value, roles_where = pick("roles", ["Mailbox"])
        roles = [self.text(role, (*roles_where, i)) for i, role in enumerate(self.seq(roles_value, roles_where))]
        for i, role in enumerate(roles):
            if role not in _ROLES:
                raise self.fail((*roles_where, i), f"unknown role; expected one of: {', '.join(_ROLES)}")
        site_value, site_where = pick("site", "Default-First-Site-Name")
        edition_value, edition_where = pick("edition", "Enterprise")
        proxy_value, proxy_where = pick("internet_web_proxy", None)
        certs_value, certs_where = pick("certificates", [])
        cert_ids = [self.text(c, (*certs_where, i)) for i, c in enumerate(self.seq(certs_value, certs_where))]
        for i, cert_id in enumerate(cert_ids):
            if cert_id not in certificates:
                raise self.fail((*certs_where, i), f"no certificate {cert_id!r} in certificates")
        vdirs, ad_props, absent = {}, {}, set()
        default_vdirs = self.mapping(defaults.get("virtual_directories") or {}, ("server_defaults", "virtual_directories"),
                                     VDIR_KINDS)
        own_vdirs = self.mapping(entry.get("virtual_directories") or {}, (*where, "virtual_directories"), VDIR_KINDS)
        for kind in VDIR_KINDS:
            merged: dict[str, Any] = {}
            ad: dict[str, Any] = {}
            for source, base in ((default_vdirs, ("server_defaults", "virtual_directories")),
                                 (own_vdirs, (*where, "virtual_directories"))):
                if kind not in source:
                    continue
                spec = self.mapping(source[kind] if source[kind] is not None else {}, (*base, kind))
                if "present" in spec:
                    self.schema.boolean(spec["present"], (*base, kind, "present"))
                    (absent.discard if spec["present"] else absent.add)(kind)
                merged.update(self.properties(kind, spec, (*base, kind), extra=("ad", "present")))
                if spec.get("ad") is not None:
                    ad.update(self.properties(kind, spec["ad"], (*base, kind, "ad")))
            vdirs[kind] = _template_values(merged, values)
            ad_props[kind] = _template_values(ad, values)
        registry = _deep_merge(check_registry(defaults.get("registry") or {}, ("server_defaults", "registry"), self.fail),
                               check_registry(entry.get("registry") or {}, (*where, "registry"), self.fail))
        extra = {}
        uri_value, uri_where = pick("autodiscover_service_internal_uri", _UNSET)
        if uri_value is not _UNSET:   # this server's SCP; null: none is published (Set-ClientAccessService ... $null)
            extra["autodiscover_service_internal_uri"] = None if uri_value is None else self.text(
                _template_values({"u": uri_value}, values)["u"], uri_where)
        for key in ("exsetup_version", "operating_system", "winrm", "iis"):
            value, key_where = pick(key, _UNSET)
            if value is not _UNSET:   # an explicit null stays: exsetup_version: null is "ExSetup.exe is missing"
                extra[key] = check_server_fact(key, value, key_where, self.fail, cert_ids)
        return ServerSpec(
            name=name, fqdn=fqdn, build=build, roles=roles, site=self.text(site_value, site_where),
            edition=self.text(edition_value, edition_where),
            internet_web_proxy=self.text(proxy_value, proxy_where) if proxy_value is not None else None,
            certificates=cert_ids, virtual_directories=vdirs, ad_properties=ad_props, absent=absent,
            registry=registry or {}, extra=extra)

    def auth_config(self, value: Any, certificates: dict[str, CertificateSpec]) -> dict[str, Any]:
        refs = ("current_certificate", "previous_certificate", "next_certificate")
        props = self.properties("AuthConfig", value, ("auth_config",), extra=refs)
        for ref in refs:
            if ref in value and value[ref] is not None:
                cert_id = self.text(value[ref], ("auth_config", ref))
                if cert_id not in certificates:
                    raise self.fail(("auth_config", ref), f"no certificate {cert_id!r} in certificates")
                props[ref] = cert_id
        return props

    def mailboxes(self, value: Any, org: dict[str, Any]) -> list[dict[str, Any]]:
        where = ("mailboxes",)
        spec = self.mapping(value or {}, where, ("count", "domain", "items"))
        count = self.integer(spec.get("count", 0), (*where, "count"), 0, 200_000)
        domain = self.host(spec.get("domain") or org["ad_domain"], (*where, "domain"))
        out = [{"Name": f"user{i:05d}", "UserPrincipalName": f"user{i:05d}@{domain}",
                "PrimarySmtpAddress": f"user{i:05d}@{domain}", "RecipientTypeDetails": "UserMailbox",
                "Sid": mailbox_sid(f"user{i:05d}@{domain}"), "MapiHttpEnabled": None} for i in range(1, count + 1)]
        for index, item in enumerate(self.seq(spec.get("items"), (*where, "items"))):
            # MapiHttpEnabled is Get-CASMailbox's, AuthenticationPolicy Get-User's (the policy's Name)
            props = self.properties("Mailbox", item, (*where, "items", index),
                                    extra=("MapiHttpEnabled", "AuthenticationPolicy"))
            if isinstance(item, dict) and item.get("AuthenticationPolicy") is not None:
                props["AuthenticationPolicy"] = self.text(item["AuthenticationPolicy"],
                                                          (*where, "items", index, "AuthenticationPolicy"))
            mapi = item.get("MapiHttpEnabled") if isinstance(item, dict) else None
            if mapi is not None and not isinstance(mapi, bool):
                raise self.fail((*where, "items", index, "MapiHttpEnabled"), "must be true, false or null")
            if not props.get("Name"):
                raise self.fail((*where, "items", index), "missing required property Name")
            props["MapiHttpEnabled"] = mapi
            # Every mailbox user has an account SID; Entra Connect syncs it as onPremisesSecurityIdentifier.
            props.setdefault("Sid", mailbox_sid(props.get("UserPrincipalName") or props["Name"]))
            out.append(props)
        return out

    def credentials(self, value: Any, org: dict[str, Any]) -> str:
        spec = self.mapping(value or {}, ("credentials",), ("username",))
        username = spec.get("username") or f"{org['netbios_name']}\\hma-reader"
        return self.text(username, ("credentials", "username"))

    def latency(self, value: dict[str, Any]) -> dict[str, Any]:
        where = ("latency",)
        spec = self.mapping(value, where, ("default", "per_server", "cmdlets"))
        cmdlets = self.mapping(spec.get("cmdlets") or {}, (*where, "cmdlets"))
        return {"default": self.duration(spec.get("default", 0), (*where, "default")),
                "per_server": (self.duration(spec["per_server"], (*where, "per_server"))
                               if "per_server" in spec else None),
                "cmdlets": {name.lower(): self.duration(v, (*where, "cmdlets", name)) for name, v in cmdlets.items()}}

    def faults(self, value: Any, servers: list[ServerSpec]) -> list[Fault]:
        effects = ("error", "not_found", "hang", "delay", "break_pool", "throttle", "http_status")
        out = []
        for index, item in enumerate(self.seq(value, ("faults",))):
            where = ("faults", index)
            spec = self.mapping(item, where, ("cmdlet", "server", "action", "times", "after", *effects))
            chosen = [effect for effect in effects if effect in spec]
            if len(chosen) != 1:
                raise self.fail(where, f"needs exactly one effect of: {', '.join(effects)}")
            effect = chosen[0]
            raw = spec[effect]
            if effect == "error":
                raw = self.text(raw, (*where, effect))
            elif effect == "delay":
                raw = self.duration(raw, (*where, effect))
            elif effect == "http_status":
                raw = self.integer(raw, (*where, effect), 400, 599)
            elif raw is not True:
                raise self.fail((*where, effect), "must be true")
            fault = Fault(effect=effect, value=raw,
                          cmdlet=self.text(spec.get("cmdlet", "*"), (*where, "cmdlet")),
                          server=self.text(spec.get("server", "*"), (*where, "server")),
                          action=self.text(spec.get("action", "*"), (*where, "action")),
                          times=(self.integer(spec["times"], (*where, "times"), 1, 1_000_000)
                                 if "times" in spec else None),
                          after=self.integer(spec.get("after", 0), (*where, "after"), 0, 1_000_000))
            if fault.server != "*" and "*" not in fault.server and not any(
                    s.name.lower() == fault.server.lower() for s in servers):
                raise self.fail((*where, "server"), f"no server named {fault.server!r}")
            out.append(fault)
        return out

    def captures(self, value: Any) -> dict[str, list[Any]]:
        """cmdlet: Export-Clixml file (relative to the scenario file): the lab answers that cmdlet with the file's
        objects, byte for byte (real captures as fixtures; hma_lab.captures)."""
        from hma_lab.captures import CaptureError, read_capture

        out: dict[str, list[Any]] = {}
        for cmdlet, file in self.mapping(value or {}, ("captures",)).items():
            where = ("captures", cmdlet)
            if not re.fullmatch(r"Get-[A-Za-z]+", cmdlet):
                raise self.fail(where, "captures replay Get- cmdlets: the key is the cmdlet name")
            relative = Path(self.text(file, where))
            path = relative if relative.is_absolute() else Path(self.doc.file(where)).parent / relative
            try:
                out[cmdlet.lower()] = read_capture(path.read_bytes(), source=str(path))
            except OSError as exc:
                raise self.fail(where, f"cannot read {path}: {exc.strerror or exc}") from None
            except CaptureError as exc:
                raise self.fail(where, str(exc)) from None
        return out

    def options(self, value: Any) -> dict[str, Any]:
        """The scan configuration's options: section for scans of this scenario (option name: true or false); the
        product checks the names when it loads the scan configuration the lab writes."""
        return {name: self.schema.boolean(flag, ("options", name))
                for name, flag in self.mapping(value or {}, ("options",)).items()}

    def expect(self, value: Any) -> dict[str, Any]:
        where = ("expect",)
        spec = self.mapping(value, where, ("verdict", "exit_code", "findings", "sources", "needs", "notes"))
        out: dict[str, Any] = {}
        needs = self.seq(spec.get("needs"), (*where, "needs"))
        for index, collector in enumerate(needs):
            if collector not in ("exchange", "os", "graph", "probes"):
                raise self.fail((*where, "needs", index), "must be one of: exchange, os, graph, probes")
        out["needs"] = list(needs)
        if "verdict" in spec:
            if spec["verdict"] not in VERDICTS:
                raise self.fail((*where, "verdict"), f"must be one of: {', '.join(VERDICTS)}")
            out["verdict"] = spec["verdict"]
        if "exit_code" in spec:
            out["exit_code"] = self.integer(spec["exit_code"], (*where, "exit_code"), 0, 4)
        findings: dict[str, Any] = {}
        for check_id, expected in self.mapping(spec.get("findings") or {}, (*where, "findings")).items():
            fwhere = (*where, "findings", check_id)
            if isinstance(expected, str):
                if expected not in FINDING_STATUSES:
                    raise self.fail(fwhere, f"must be one of: {', '.join(FINDING_STATUSES)}")
                findings[check_id] = expected
            else:
                per_subject = self.mapping(expected, fwhere)
                for subject, status in per_subject.items():
                    if status not in FINDING_STATUSES:
                        raise self.fail((*fwhere, subject), f"must be one of: {', '.join(FINDING_STATUSES)}")
                findings[check_id] = dict(per_subject)
        out["findings"] = findings
        sources = {}
        for key, status in self.mapping(spec.get("sources") or {}, (*where, "sources")).items():
            if status not in SOURCE_STATUSES:
                raise self.fail((*where, "sources", key), f"must be one of: {', '.join(SOURCE_STATUSES)}")
            sources[key] = status
        out["sources"] = sources
        return out


_OFFSET = re.compile(r"\s*([+-])\s*([0-9]{1,6})\s*([smhdy])\s*")
_OFFSET_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


def offset_moment(value: Any, now: datetime) -> datetime | None:
    """``now`` moved by an offset such as -30d, +2y, +12h or -35m (so a scenario's dates do not age), or None when
    ``value`` is not one or lands outside the calendar."""
    match = _OFFSET.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    seconds = int(match.group(2)) * _OFFSET_SECONDS[match.group(3)]
    try:
        return now + timedelta(seconds=seconds if match.group(1) == "+" else -seconds)
    except OverflowError:
        return None


def _parse_build(text: str) -> tuple[int, int, int, int] | None:
    match = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{1,5})\.(\d{1,5})", text.strip())
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]


def _template(text: str, values: dict[str, Any]) -> str:
    """Replace {name}, {fqdn}, {n}, {n:02}, {namespace}, {domain}; nothing else is interpreted."""
    def replace(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        if value is None:
            return match.group(0)
        if match.group(2) and isinstance(value, int):
            return str(value).zfill(int(match.group(2)))
        return str(value)
    return _TEMPLATE.sub(replace, text)


def _template_values(props: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in props.items():
        if isinstance(value, str):
            value = _template(value, values)
        elif isinstance(value, list):
            value = [_template(item, values) if isinstance(item, str) else item for item in value]
        out[key] = value
    return out


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def mailbox_sid(key: str) -> str:
    """A stable account SID for a lab mailbox user that names none; RIDs from 10000 are ordinary users (below 1000
    are built-in accounts). The tenants section syncs the same SID, as Entra Connect does."""
    digest = hashlib.sha256(key.lower().encode()).digest()
    return f"S-1-5-21-3623811015-3361044348-30300820-{10000 + int.from_bytes(digest[:3], 'big')}"
