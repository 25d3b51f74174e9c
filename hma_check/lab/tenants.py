"""The ``tenants:`` section of a lab scenario: the Entra tenants the lab's Graph and token service answers for."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from hma_check.errors import InputError

EXO_APP_ID = "00000002-0000-0ff1-ce00-000000000000"

# What a scan's app registration is granted when a scenario does not say: the least-privileged application
# permissions of every query the collector runs (graph-and-identity.md section 6).
DEFAULT_ROLES = ("Application.Read.All", "Organization.Read.All", "Domain.Read.All", "Policy.Read.All",
                 "User.Read.All")

# The routes of the lab service, as named in ``faults:`` entries and in the request log.
ROUTES = ("token", "service_principals", "organization", "domains", "users", "security_defaults",
          "conditional_access", "subscribed_skus")

AUTHENTICATION_TYPES = ("Managed", "Federated")
CA_STATES = ("enabled", "disabled", "enabledForReportingButNotEnforced")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                     r"[A-Za-z0-9])?)+$")
# Graph caps one tenant far below this; the bound keeps a typo from asking the lab for a billion users.
MAX_GENERATED_USERS = 1_000_000


class ScenarioError(InputError):
    """A scenario's ``tenants:`` section fails validation (one line naming the file, line and path)."""


@dataclass(frozen=True)
class Fault:
    """Answer ``status`` on ``route`` for the next ``times`` requests (None: every request)."""

    route: str
    status: int
    times: int | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class TenantApp:
    """The app registration a scan signs in with. Its secret and certificate are made when the lab starts."""

    client_id: str
    roles: frozenset[str]


@dataclass(frozen=True)
class GeneratedUsers:
    """``count`` synthetic users, built on demand so a 50,000-user tenant costs no memory until it is paged."""

    count: int
    domain: str
    synced: bool = True
    prefix: str = "user"
    sid_domain: str = "S-1-5-21-1004336348-1177238915-682003330"

    def user(self, index: int) -> dict[str, Any]:
        upn = f"{self.prefix}{index:06d}@{self.domain}"
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, upn)),
            "displayName": f"{self.prefix.capitalize()} {index:06d}",
            "userPrincipalName": upn,
            "mail": upn,
            "onPremisesSyncEnabled": True if self.synced else None,
            # RIDs below 1000 are built-in accounts (500 is Administrator); generated users start above them.
            "onPremisesSecurityIdentifier": f"{self.sid_domain}-{10000 + index}" if self.synced else None,
        }


@dataclass
class Tenant:
    id: str
    display_name: str
    initial_domain: str
    domains: list[dict[str, Any]]
    on_premises_sync_enabled: bool | None
    on_premises_last_sync_date_time: str | None
    exo_service_principal: dict[str, Any] | None
    users: list[dict[str, Any]]
    generated_users: GeneratedUsers | None
    security_defaults: bool
    conditional_access_policies: list[dict[str, Any]]
    subscribed_skus: list[dict[str, Any]]
    app: TenantApp
    faults: list[Fault] = field(default_factory=list)

    @property
    def user_count(self) -> int:
        return len(self.users) + (self.generated_users.count if self.generated_users else 0)

    def users_between(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Users ``start`` to ``stop - 1`` in a stable order: the explicit ones first, then the generated ones."""
        stop = min(stop, self.user_count)
        out = [dict(u) for u in self.users[start:stop]]
        if self.generated_users:
            first = max(start - len(self.users), 0)
            last = stop - len(self.users)
            out.extend(self.generated_users.user(i) for i in range(first, last))
        return out

    def organization(self) -> dict[str, Any]:
        """The Graph organization object, with verifiedDomains derived from the verified domains."""
        verified = [{
            "capabilities": "Email, OfficeCommunicationsOnline" if d["id"] != self.initial_domain else "Email",
            "isDefault": bool(d.get("isDefault")),
            "isInitial": d["id"] == self.initial_domain,
            "name": d["id"],
            "type": d.get("authenticationType", "Managed"),
        } for d in self.domains if d.get("isVerified")]
        return {
            "id": self.id,
            "displayName": self.display_name,
            "verifiedDomains": verified,
            "onPremisesSyncEnabled": self.on_premises_sync_enabled,
            "onPremisesLastSyncDateTime": self.on_premises_last_sync_date_time,
            "tenantType": "AAD",
        }

    def security_defaults_policy(self) -> dict[str, Any]:
        return {
            "id": "00000000-0000-0000-0000-000000000005",
            "displayName": "Security Defaults",
            "description": "Security defaults is a set of basic identity security mechanisms recommended by Microsoft.",
            "isEnabled": self.security_defaults,
        }


# ------------------------------------------------------------------------------------------------- validation

class _Where:
    """A position in the scenario: the YAML path and, where the loader kept it, the line."""

    def __init__(self, path: str, line_of: Callable[[Any], int | None]) -> None:
        self.path, self.line_of = path, line_of

    def fail(self, at: str, obj: Any, message: str) -> ScenarioError:
        return ScenarioError(f"{at}: {message}", path=self.path, line=self.line_of(obj))


def load_tenants(raw: Any, *, path: str = "<scenario>",
                 line_of: Callable[[Any], int | None] | None = None) -> list[Tenant]:
    """Validate a scenario's ``tenants:`` value and build the model; the first problem is one ScenarioError."""
    where = _Where(path, line_of or (lambda obj: None))
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise where.fail("tenants", raw, "must be a list of tenants")
    tenants = [_tenant(entry, f"tenants[{i}]", where) for i, entry in enumerate(raw)]
    seen: set[str] = set()
    for i, tenant in enumerate(tenants):
        if tenant.id.lower() in seen:
            raise where.fail(f"tenants[{i}].id", raw[i], f"duplicate tenant id {tenant.id}")
        seen.add(tenant.id.lower())
    return tenants


_TENANT_KEYS = {"id", "display_name", "initial_domain", "domains", "on_premises_sync_enabled",
                "on_premises_last_sync_date_time", "exo_service_principal", "users", "generate_users",
                "security_defaults", "conditional_access_policies", "subscribed_skus", "app", "faults"}


def _tenant(entry: Any, at: str, where: _Where) -> Tenant:
    _mapping(entry, at, where, required={"id", "display_name", "initial_domain", "domains"}, allowed=_TENANT_KEYS)
    tenant_id = _guid(entry["id"], f"{at}.id", entry, where)
    initial = _domain_name(entry["initial_domain"], f"{at}.initial_domain", entry, where)
    domains = _domains(entry["domains"], f"{at}.domains", where)
    if initial.lower() not in {d["id"].lower() for d in domains}:
        raise where.fail(f"{at}.initial_domain", entry, f"{initial} is not one of the tenant's domains")
    sync = entry.get("on_premises_sync_enabled")
    if sync not in (True, False, None):
        raise where.fail(f"{at}.on_premises_sync_enabled", entry, "must be true, false or null")
    last_sync = entry.get("on_premises_last_sync_date_time")
    if last_sync is not None and not isinstance(last_sync, str):
        # YAML turns an unquoted date into a datetime; Graph sends a string, so ask for one.
        raise where.fail(f"{at}.on_premises_last_sync_date_time", entry, "must be a quoted ISO 8601 string")
    security_defaults = entry.get("security_defaults", False)
    if not isinstance(security_defaults, bool):
        raise where.fail(f"{at}.security_defaults", entry, "must be true or false")
    users = _users(entry.get("users", []), f"{at}.users", where)
    generated = _generated_users(entry.get("generate_users"), f"{at}.generate_users", domains, where)
    return Tenant(
        id=tenant_id,
        display_name=_string(entry["display_name"], f"{at}.display_name", entry, where),
        initial_domain=initial,
        domains=domains,
        on_premises_sync_enabled=sync,
        on_premises_last_sync_date_time=last_sync,
        exo_service_principal=_service_principal(entry.get("exo_service_principal", {}),
                                                 f"{at}.exo_service_principal", tenant_id, where),
        users=users,
        generated_users=generated,
        security_defaults=security_defaults,
        conditional_access_policies=_ca_policies(entry.get("conditional_access_policies", []),
                                                 f"{at}.conditional_access_policies", where),
        subscribed_skus=_object_list(entry.get("subscribed_skus", []), f"{at}.subscribed_skus", where),
        app=_app(entry.get("app"), f"{at}.app", tenant_id, where),
        faults=_faults(entry.get("faults", []), f"{at}.faults", where),
    )


def _mapping(obj: Any, at: str, where: _Where, *, required: set[str] = frozenset(),
             allowed: set[str] | None = None) -> None:
    if not isinstance(obj, dict):
        raise where.fail(at, obj, "must be a mapping")
    missing = sorted(required - obj.keys())
    if missing:
        raise where.fail(at, obj, f"missing {', '.join(missing)}")
    if allowed is not None:
        unknown = sorted(str(k) for k in obj.keys() - allowed)
        if unknown:
            raise where.fail(at, obj, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _string(value: Any, at: str, parent: Any, where: _Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.fail(at, parent, "must be a non-empty string")
    return value


def _guid(value: Any, at: str, parent: Any, where: _Where) -> str:
    if not isinstance(value, str) or not _GUID.match(value):
        raise where.fail(at, parent, f"must be a GUID, got {value!r}")
    return value.lower()


def _domain_name(value: Any, at: str, parent: Any, where: _Where) -> str:
    if not isinstance(value, str) or not _DOMAIN.match(value):
        raise where.fail(at, parent, f"must be a DNS domain name, got {value!r}")
    return value


def _object_list(value: Any, at: str, where: _Where) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise where.fail(at, value, "must be a list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise where.fail(f"{at}[{i}]", value, "must be a mapping (Graph JSON)")
        for key in item:
            if not isinstance(key, str):
                raise where.fail(f"{at}[{i}]", item, f"property names must be strings, got {key!r}")
    return [dict(item) for item in value]


def _domains(value: Any, at: str, where: _Where) -> list[dict[str, Any]]:
    domains = _object_list(value, at, where)
    if not domains:
        raise where.fail(at, value, "a tenant has at least its initial domain")
    for i, domain in enumerate(domains):
        item = value[i]
        _domain_name(domain.get("id"), f"{at}[{i}].id", item, where)
        kind = domain.get("authenticationType", "Managed")
        if kind not in AUTHENTICATION_TYPES:
            raise where.fail(f"{at}[{i}].authenticationType", item, f"must be Managed or Federated, got {kind!r}")
        for flag in ("isVerified", "isDefault"):
            if not isinstance(domain.get(flag, False), bool):
                raise where.fail(f"{at}[{i}].{flag}", item, "must be true or false")
        domain.setdefault("authenticationType", "Managed")
        domain.setdefault("isVerified", True)
        domain.setdefault("isDefault", False)
    if sum(1 for d in domains if d["isDefault"]) > 1:
        raise where.fail(at, value, "only one domain can be isDefault")
    return domains


def _users(value: Any, at: str, where: _Where) -> list[dict[str, Any]]:
    users = _object_list(value, at, where)
    for i, user in enumerate(users):
        upn = user.get("userPrincipalName")
        if not isinstance(upn, str) or "@" not in upn:
            raise where.fail(f"{at}[{i}].userPrincipalName", value[i], "must be a UPN like name@domain")
        sync = user.get("onPremisesSyncEnabled")
        if sync not in (True, False, None):
            raise where.fail(f"{at}[{i}].onPremisesSyncEnabled", value[i], "must be true, false or null")
        user.setdefault("id", str(uuid.uuid5(uuid.NAMESPACE_URL, upn.lower())))
        user.setdefault("displayName", upn.split("@", 1)[0])
        user.setdefault("mail", None)
        user.setdefault("onPremisesSyncEnabled", None)
        user.setdefault("onPremisesSecurityIdentifier", None)
    return users


def _generated_users(value: Any, at: str, domains: list[dict[str, Any]], where: _Where) -> GeneratedUsers | None:
    if value is None:
        return None
    _mapping(value, at, where, required={"count"}, allowed={"count", "domain", "synced", "prefix"})
    count = value["count"]
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_GENERATED_USERS:
        raise where.fail(f"{at}.count", value, f"must be an integer from 0 to {MAX_GENERATED_USERS}")
    if count == 0:
        return None
    default = next((d["id"] for d in domains if d["isDefault"]), domains[0]["id"])
    domain = _domain_name(value.get("domain", default), f"{at}.domain", value, where)
    synced = value.get("synced", True)
    if not isinstance(synced, bool):
        raise where.fail(f"{at}.synced", value, "must be true or false")
    prefix = value.get("prefix", "user")
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]{0,30}", prefix):
        raise where.fail(f"{at}.prefix", value, "must be letters, digits, '.', '_' or '-', starting with a letter")
    return GeneratedUsers(count=count, domain=domain, synced=synced, prefix=prefix)


def _service_principal(value: Any, at: str, tenant_id: str, where: _Where) -> dict[str, Any] | None:
    """The tenant's Office 365 Exchange Online service principal; ``null`` models a tenant without it (404)."""
    if value is None:
        return None
    _mapping(value, at, where)
    sp = dict(value)
    for key in ("servicePrincipalNames", "replyUrls", "keyCredentials"):
        items = sp.setdefault(key, [])
        if not isinstance(items, list):
            raise where.fail(f"{at}.{key}", value, "must be a list")
    for i, name in enumerate(sp["servicePrincipalNames"] + sp["replyUrls"]):
        if not isinstance(name, str):
            raise where.fail(at, value, f"names and reply URLs must be strings, got {name!r}")
    _object_list(sp["keyCredentials"], f"{at}.keyCredentials", where)
    if sp.setdefault("appId", EXO_APP_ID) != EXO_APP_ID:
        raise where.fail(f"{at}.appId", value, f"the Exchange Online service principal's appId is {EXO_APP_ID}")
    sp.setdefault("id", str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{EXO_APP_ID}")))
    sp.setdefault("displayName", "Office 365 Exchange Online")
    return sp


def _ca_policies(value: Any, at: str, where: _Where) -> list[dict[str, Any]]:
    policies = _object_list(value, at, where)
    for i, policy in enumerate(policies):
        if policy.get("state") not in CA_STATES:
            raise where.fail(f"{at}[{i}].state", value[i], f"must be one of {', '.join(CA_STATES)}")
        if not isinstance(policy.get("displayName"), str):
            raise where.fail(f"{at}[{i}].displayName", value[i], "must be a string")
        policy.setdefault("id", str(uuid.uuid5(uuid.NAMESPACE_URL, f"ca/{policy['displayName']}")))
    return policies


def _app(value: Any, at: str, tenant_id: str, where: _Where) -> TenantApp:
    value = {} if value is None else value
    _mapping(value, at, where, allowed={"client_id", "roles"})
    default_id = str(uuid.UUID(bytes=hashlib.sha256(f"hma-check-lab-app/{tenant_id}".encode()).digest()[:16],
                               version=4))
    client_id = _guid(value.get("client_id", default_id), f"{at}.client_id", value, where)
    roles = value.get("roles", list(DEFAULT_ROLES))
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise where.fail(f"{at}.roles", value, "must be a list of permission names such as Application.Read.All")
    return TenantApp(client_id=client_id, roles=frozenset(roles))


def _faults(value: Any, at: str, where: _Where) -> list[Fault]:
    if not isinstance(value, list):
        raise where.fail(at, value, "must be a list")
    faults = []
    for i, item in enumerate(value):
        _mapping(item, f"{at}[{i}]", where, required={"route", "status"},
                 allowed={"route", "status", "times", "retry_after"})
        if item["route"] not in ROUTES:
            raise where.fail(f"{at}[{i}].route", item, f"must be one of {', '.join(ROUTES)}")
        status, times, retry_after = item["status"], item.get("times"), item.get("retry_after")
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise where.fail(f"{at}[{i}].status", item, "must be an HTTP error status (400-599)")
        if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
            raise where.fail(f"{at}[{i}].times", item, "must be a positive integer (omit it for every request)")
        if retry_after is not None and (not isinstance(retry_after, int) or isinstance(retry_after, bool)
                                        or retry_after < 0):
            raise where.fail(f"{at}[{i}].retry_after", item, "must be a whole number of seconds")
        faults.append(Fault(route=item["route"], status=status, times=times, retry_after=retry_after))
    return faults


# ------------------------------------------------------------------------------------------ standalone loading

def tenants_from_yaml(text: str, *, path: str = "<scenario>") -> list[Tenant]:
    """Parse YAML text holding a ``tenants:`` list (or a whole scenario) keeping line numbers for errors."""
    data, line_of = yaml_with_lines(text, path=path)
    if isinstance(data, dict):
        data = data.get("tenants")
    return load_tenants(data, path=path, line_of=line_of)


def yaml_with_lines(text: str, *, path: str) -> tuple[Any, Callable[[Any], int | None]]:
    """safe_load that remembers the line of every mapping and list it builds, so errors can name it."""
    import yaml

    lines: dict[int, int] = {}

    class LineLoader(yaml.SafeLoader):
        pass

    # PyYAML yields the container first and fills it afterwards; record the line on that very object.
    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
        data: dict[Any, Any] = {}
        lines[id(data)] = node.start_mark.line + 1
        yield data
        data.update(loader.construct_mapping(node))

    def sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> Any:
        data: list[Any] = []
        lines[id(data)] = node.start_mark.line + 1
        yield data
        data.extend(loader.construct_sequence(node))

    LineLoader.add_constructor("tag:yaml.org,2002:map", mapping)
    LineLoader.add_constructor("tag:yaml.org,2002:seq", sequence)

    try:
        data = yaml.load(text, Loader=LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScenarioError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", path=path,
                            line=mark.line + 1 if mark else None) from None
    return data, lambda obj: lines.get(id(obj))
