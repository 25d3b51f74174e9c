"""The ``tenants:`` section of a lab scenario: the Entra tenants the lab's Graph and token service answers for."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
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
# Positions are tuples such as ("tenants", 0, "domains", 1, "authenticationType"): the scenario loader turns one
# into "file:line: tenants[0].domains[1].authenticationType" (hma_check.util.yaml_source).
Where = tuple[Any, ...]
Fail = Callable[[Where, str], InputError]


def load_section(raw: Any, context: Any) -> list[Tenant]:
    """The hook the scenario loader calls for ``tenants:`` (``context.error(where, message)`` positions errors)."""
    objects = context.scenario.objects
    return load_tenants(raw, fail=lambda where, message: context.error(where[1:], message),
                        exchange_users=objects.get("Mailbox", []) + objects.get("User", []))


def start_service(lab: Any) -> Any:
    """The hook the lab runtime calls: serve the scenario's tenants (token endpoint and Graph), or nothing."""
    tenants = lab.scenario.sections.get("tenants")
    if not tenants:
        return None
    from hma_lab.graph_service import GraphService

    return GraphService(tenants).start()


def load_tenants(raw: Any, *, fail: Fail | None = None,
                 exchange_users: list[dict[str, Any]] | None = None) -> list[Tenant]:
    """Validate a scenario's ``tenants:`` value and build the model; the first problem is one InputError.

    ``exchange_users`` are the scenario's mailboxes and administrators (Exchange property names), for tenants that
    say ``sync_exchange_users: true``.
    """
    fail = fail or _plain_fail
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise fail(("tenants",), "must be a list of tenants")
    tenants = [_tenant(entry, ("tenants", i), fail, exchange_users) for i, entry in enumerate(raw)]
    seen: set[str] = set()
    for i, tenant in enumerate(tenants):
        if tenant.id in seen:
            raise fail(("tenants", i, "id"), f"duplicate tenant id {tenant.id}")
        seen.add(tenant.id)
    return tenants


def _plain_fail(where: Where, message: str) -> InputError:
    from hma_lab.scenario import ScenarioError
    from hma_check.util.yaml_source import dotted

    return ScenarioError(f"{dotted(where)}: {message}")


_TENANT_KEYS = {"id", "display_name", "initial_domain", "domains", "on_premises_sync_enabled",
                "on_premises_last_sync_date_time", "exo_service_principal", "users", "generate_users",
                "security_defaults", "conditional_access_policies", "subscribed_skus", "app", "faults",
                "sync_exchange_users"}


def _tenant(entry: Any, at: Where, fail: Fail, exchange_users: list[dict[str, Any]] | None) -> Tenant:
    _mapping(entry, at, fail, required={"id", "display_name", "initial_domain", "domains"}, allowed=_TENANT_KEYS)
    tenant_id = _guid(entry["id"], (*at, "id"), fail)
    initial = _domain_name(entry["initial_domain"], (*at, "initial_domain"), fail)
    domains = _domains(entry["domains"], (*at, "domains"), fail)
    if initial.lower() not in {d["id"].lower() for d in domains}:
        raise fail((*at, "initial_domain"), f"{initial} is not one of the tenant's domains")
    sync = entry.get("on_premises_sync_enabled")
    if sync not in (True, False, None):
        raise fail((*at, "on_premises_sync_enabled"), "must be true, false or null")
    last_sync = _moment(entry.get("on_premises_last_sync_date_time"), (*at, "on_premises_last_sync_date_time"), fail)
    security_defaults = entry.get("security_defaults", False)
    if not isinstance(security_defaults, bool):
        raise fail((*at, "security_defaults"), "must be true or false")
    return Tenant(
        id=tenant_id,
        display_name=_string(entry["display_name"], (*at, "display_name"), fail),
        initial_domain=initial,
        domains=domains,
        on_premises_sync_enabled=sync,
        on_premises_last_sync_date_time=last_sync,
        exo_service_principal=_service_principal(entry.get("exo_service_principal", {}),
                                                 (*at, "exo_service_principal"), tenant_id, fail),
        users=_with_synced_exchange_users(_users(entry.get("users", []), (*at, "users"), fail),
                                          _bool(entry.get("sync_exchange_users", False),
                                                (*at, "sync_exchange_users"), fail),
                                          exchange_users, (*at, "sync_exchange_users"), fail),
        generated_users=_generated_users(entry.get("generate_users"), (*at, "generate_users"), domains, fail),
        security_defaults=security_defaults,
        conditional_access_policies=_ca_policies(entry.get("conditional_access_policies", []),
                                                 (*at, "conditional_access_policies"), fail),
        subscribed_skus=_object_list(entry.get("subscribed_skus", []), (*at, "subscribed_skus"), fail),
        app=_app(entry.get("app"), (*at, "app"), tenant_id, fail),
        faults=_faults(entry.get("faults", []), (*at, "faults"), fail),
    )


def _mapping(obj: Any, at: Where, fail: Fail, *, required: set[str] = frozenset(),
             allowed: set[str] | None = None) -> None:
    if not isinstance(obj, dict):
        raise fail(at, "must be a mapping")
    missing = sorted(required - obj.keys())
    if missing:
        raise fail(at, f"missing {', '.join(missing)}")
    if allowed is not None:
        unknown = sorted(str(k) for k in obj.keys() - allowed)
        if unknown:
            raise fail((*at, unknown[0]), f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _string(value: Any, at: Where, fail: Fail) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(at, "must be a non-empty string")
    return value


def _guid(value: Any, at: Where, fail: Fail) -> str:
    if not isinstance(value, str) or not _GUID.match(value):
        raise fail(at, f"must be a GUID, got {value!r}")
    return value.lower()


def _domain_name(value: Any, at: Where, fail: Fail) -> str:
    if not isinstance(value, str) or not _DOMAIN.match(value):
        raise fail(at, f"must be a DNS domain name, got {value!r}")
    return value


def _moment(value: Any, at: Where, fail: Fail) -> str | None:
    """An ISO 8601 UTC string as Graph sends it, from a quoted ISO date or an offset from now ("-6h", "-3d"), so a
    shipped scenario's "last sync" does not age into a failing check."""
    if value is None:
        return None
    from hma_lab.scenario import offset_moment   # not at the top: this module must not import yaml

    moved = offset_moment(value, datetime.now(timezone.utc))
    if moved is not None:
        return moved.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return value
    # YAML turns an unquoted date into a datetime; Graph sends a string, so ask for one.
    raise fail(at, "must be a quoted ISO 8601 UTC time such as \"2026-11-20T06:00:00Z\" or an offset such as -6h")


def _bool(value: Any, at: Where, fail: Fail) -> bool:
    if not isinstance(value, bool):
        raise fail(at, "must be true or false")
    return value


def _object_list(value: Any, at: Where, fail: Fail) -> list[dict[str, Any]]:
    """A list of Graph JSON objects, kept verbatim (copied, so defaults never write into the caller's data)."""
    if not isinstance(value, list):
        raise fail(at, "must be a list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise fail((*at, i), "must be a mapping (Graph JSON)")
    return [dict(item) for item in value]


def _domains(value: Any, at: Where, fail: Fail) -> list[dict[str, Any]]:
    domains = _object_list(value, at, fail)
    if not domains:
        raise fail(at, "a tenant has at least its initial domain")
    for i, domain in enumerate(domains):
        _domain_name(domain.get("id"), (*at, i, "id"), fail)
        domain.setdefault("authenticationType", "Managed")
        if domain["authenticationType"] not in AUTHENTICATION_TYPES:
            raise fail((*at, i, "authenticationType"),
                       f"must be Managed or Federated, got {domain['authenticationType']!r}")
        for flag, default in (("isVerified", True), ("isDefault", False)):
            _bool(domain.setdefault(flag, default), (*at, i, flag), fail)
    if sum(1 for d in domains if d["isDefault"]) > 1:
        raise fail(at, "only one domain can be isDefault")
    return domains


def _users(value: Any, at: Where, fail: Fail) -> list[dict[str, Any]]:
    users = _object_list(value, at, fail)
    for i, user in enumerate(users):
        upn = user.get("userPrincipalName")
        if not isinstance(upn, str) or "@" not in upn:
            raise fail((*at, i, "userPrincipalName"), "must be a UPN like name@domain")
        if user.get("onPremisesSyncEnabled") not in (True, False, None):
            raise fail((*at, i, "onPremisesSyncEnabled"), "must be true, false or null")
        user.setdefault("id", str(uuid.uuid5(uuid.NAMESPACE_URL, upn.lower())))
        user.setdefault("displayName", upn.split("@", 1)[0])
        for key in ("mail", "onPremisesSyncEnabled", "onPremisesSecurityIdentifier"):
            user.setdefault(key, None)
    return users


def _with_synced_exchange_users(users: list[dict[str, Any]], wanted: bool,
                                exchange_users: list[dict[str, Any]] | None, at: Where,
                                fail: Fail) -> list[dict[str, Any]]:
    """Entra Connect's view of the on-premises directory: every mailbox user and administrator, synced.

    Accounts with a RID below 1000 (the built-in Administrator is 500) are isCriticalSystemObject, which Entra
    Connect never synchronizes (https://learn.microsoft.com/entra/identity/hybrid/connect/concept-azure-ad-connect-sync-default-configuration).
    Users listed explicitly win over these, so a scenario can still make one of them unsynced.
    """
    if not wanted:
        return users
    if exchange_users is None:
        raise fail(at, "needs the scenario's mailboxes and admins: use it in a scenario file")
    listed = {u["userPrincipalName"].lower() for u in users}
    for person in exchange_users:
        upn = person.get("UserPrincipalName")
        sid = person.get("Sid")
        if not upn or upn.lower() in listed:
            continue
        if sid and (rid := sid.rsplit("-", 1)[-1]).isdigit() and int(rid) < 1000:
            continue
        listed.add(upn.lower())
        users.append({"id": str(uuid.uuid5(uuid.NAMESPACE_URL, upn.lower())), "displayName": person.get("Name") or upn,
                      "userPrincipalName": upn, "mail": person.get("PrimarySmtpAddress") or upn,
                      "onPremisesSyncEnabled": True, "onPremisesSecurityIdentifier": sid or _synthetic_sid(upn)})
    return users


def _synthetic_sid(upn: str) -> str:
    """A stable SID for a lab mailbox user (the scenario gives mailboxes none); RIDs from 10000 are ordinary users."""
    digest = hashlib.sha256(upn.lower().encode()).digest()
    return f"S-1-5-21-3623811015-3361044348-30300820-{10000 + int.from_bytes(digest[:3], 'big')}"


def _generated_users(value: Any, at: Where, domains: list[dict[str, Any]], fail: Fail) -> GeneratedUsers | None:
    if value is None:
        return None
    _mapping(value, at, fail, required={"count"}, allowed={"count", "domain", "synced", "prefix"})
    count = value["count"]
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_GENERATED_USERS:
        raise fail((*at, "count"), f"must be an integer from 0 to {MAX_GENERATED_USERS}")
    if count == 0:
        return None
    default = next((d["id"] for d in domains if d["isDefault"]), domains[0]["id"])
    prefix = value.get("prefix", "user")
    if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]{0,30}", prefix):
        raise fail((*at, "prefix"), "must be letters, digits, '.', '_' or '-', starting with a letter")
    return GeneratedUsers(count=count, domain=_domain_name(value.get("domain", default), (*at, "domain"), fail),
                          synced=_bool(value.get("synced", True), (*at, "synced"), fail), prefix=prefix)


def _service_principal(value: Any, at: Where, tenant_id: str, fail: Fail) -> dict[str, Any] | None:
    """The tenant's Office 365 Exchange Online service principal; ``null`` models a tenant without it (404)."""
    if value is None:
        return None
    _mapping(value, at, fail)
    sp = dict(value)
    for key in ("servicePrincipalNames", "replyUrls"):
        items = sp.setdefault(key, [])
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise fail((*at, key), "must be a list of strings")
    sp["keyCredentials"] = _object_list(sp.get("keyCredentials", []), (*at, "keyCredentials"), fail)
    if sp.setdefault("appId", EXO_APP_ID) != EXO_APP_ID:
        raise fail((*at, "appId"), f"the Exchange Online service principal's appId is {EXO_APP_ID}")
    sp.setdefault("id", str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{EXO_APP_ID}")))
    sp.setdefault("displayName", "Office 365 Exchange Online")
    return sp


def _ca_policies(value: Any, at: Where, fail: Fail) -> list[dict[str, Any]]:
    policies = _object_list(value, at, fail)
    for i, policy in enumerate(policies):
        if policy.get("state") not in CA_STATES:
            raise fail((*at, i, "state"), f"must be one of {', '.join(CA_STATES)}")
        _string(policy.get("displayName"), (*at, i, "displayName"), fail)
        policy.setdefault("id", str(uuid.uuid5(uuid.NAMESPACE_URL, f"ca/{policy['displayName']}")))
    return policies


def _app(value: Any, at: Where, tenant_id: str, fail: Fail) -> TenantApp:
    value = {} if value is None else value
    _mapping(value, at, fail, allowed={"client_id", "roles"})
    default_id = str(uuid.UUID(bytes=hashlib.sha256(f"hma-check-lab-app/{tenant_id}".encode()).digest()[:16],
                               version=4))
    client_id = _guid(value.get("client_id", default_id), (*at, "client_id"), fail)
    roles = value.get("roles", list(DEFAULT_ROLES))
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise fail((*at, "roles"), "must be a list of permission names such as Application.Read.All")
    return TenantApp(client_id=client_id, roles=frozenset(roles))


def _faults(value: Any, at: Where, fail: Fail) -> list[Fault]:
    if not isinstance(value, list):
        raise fail(at, "must be a list")
    faults = []
    for i, item in enumerate(value):
        _mapping(item, (*at, i), fail, required={"route", "status"}, allowed={"route", "status", "times", "retry_after"})
        if item["route"] not in ROUTES:
            raise fail((*at, i, "route"), f"must be one of {', '.join(ROUTES)}")
        status, times, retry_after = item["status"], item.get("times"), item.get("retry_after")
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise fail((*at, i, "status"), "must be an HTTP error status (400-599)")
        if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
            raise fail((*at, i, "times"), "must be a positive integer (omit it for every request)")
        if retry_after is not None and (not isinstance(retry_after, int) or isinstance(retry_after, bool)
                                        or retry_after < 0):
            raise fail((*at, i, "retry_after"), "must be a whole number of seconds")
        faults.append(Fault(route=item["route"], status=status, times=times, retry_after=retry_after))
    return faults


# ------------------------------------------------------------------------------------------ standalone loading

def tenants_from_yaml(text: str, *, path: str = "<scenario>") -> list[Tenant]:
    """Parse YAML text holding a ``tenants:`` list (a scenario's, or a file of its own), with file-and-line errors."""
    from hma_lab.scenario import ScenarioError
    from hma_check.util.yaml_source import load_yaml_bytes

    doc = load_yaml_bytes(text.encode("utf-8"), path, ScenarioError)
    if not isinstance(doc.data, dict):
        raise doc.error((), "must be a mapping with a tenants: list")
    return load_tenants(doc.data.get("tenants"), fail=doc.error)
