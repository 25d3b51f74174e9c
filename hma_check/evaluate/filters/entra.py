"""Entra ID policy logic used by the identity checks: Conditional Access scope and legacy-authentication blocking.

The legacy-block rule is the one Maester (Test-MtCisaBlockLegacyAuth), ScubaGear (MS.AAD.1.1v1) and Prowler
(entra_legacy_authentication_blocked) share: an enabled policy that blocks the 'exchangeActiveSync' and 'other' client
app types for all users and all (or Exchange Online) applications. Report-only counts as not enforced, as in Prowler.
https://learn.microsoft.com/entra/identity/conditional-access/policy-block-legacy-authentication
"""

from __future__ import annotations

import operator
from itertools import compress, repeat
from typing import Any

EXCHANGE_ONLINE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
_EXCHANGE_APPLICATIONS = {"all", "office365", EXCHANGE_ONLINE_APP_ID}
REPORT_ONLY = "enabledForReportingButNotEnforced"


def _conditions(policy: dict[str, Any]) -> dict[str, Any]:
    return policy.get("conditions") or {}


def _lower(values: Any) -> set[str]:
    return {str(v).lower() for v in (values or [])}


def _targets_exchange(policy: dict[str, Any]) -> bool:
    applications = _conditions(policy).get("applications") or {}
    included = _lower(applications.get("includeApplications"))
    excluded = _lower(applications.get("excludeApplications"))
    return bool(included & _EXCHANGE_APPLICATIONS) and EXCHANGE_ONLINE_APP_ID not in excluded \
        and "office365" not in excluded


def legacy_block_state(policy: dict[str, Any]) -> str | None:
    """'enforced' or 'report-only' when the policy blocks legacy authentication for everyone, else None."""
    conditions = _conditions(policy)
    grants = _lower((policy.get("grantControls") or {}).get("builtInControls"))
    client_types = _lower(conditions.get("clientAppTypes"))
    users = _lower((conditions.get("users") or {}).get("includeUsers"))
    if "block" not in grants or not {"exchangeactivesync", "other"} <= client_types or "all" not in users:
        return None
    if not targets_users(policy):
        return None
    if not _targets_exchange(policy):
        return None
    state = policy.get("state")
    if state == "enabled":
        return "enforced"
    if state == REPORT_ONLY:
        return "report-only"
    return None


def targets_users(policy: dict[str, Any]) -> bool:
    """False for a workload-identity policy: it assigns service principals (conditions.clientApplications) and no
    user, group, role or guest, so no person's sign-in is governed by it
    (https://learn.microsoft.com/graph/api/resources/conditionalaccessclientapplications)."""
    conditions = _conditions(policy)
    workload = (conditions.get("clientApplications") or {}).get("includeServicePrincipals")
    users = conditions.get("users")
    if users is None:
        return not workload
    people = _lower(users.get("includeUsers")) - {"none"}
    return bool(people or users.get("includeGroups") or users.get("includeRoles")
                or users.get("includeGuestsOrExternalUsers"))


def _grants(policy: dict[str, Any]) -> list[str]:
    """What a policy asks of a sign-in, in words: built-in controls, an authentication strength (listed with
    builtInControls empty), terms of use, custom factors
    (https://learn.microsoft.com/graph/api/resources/conditionalaccessgrantcontrols)."""
    grant = policy.get("grantControls") or {}
    words = [str(c) for c in grant.get("builtInControls") or []]
    strength = grant.get("authenticationStrength")
    if strength:
        words.append(f"authentication strength {strength.get('displayName') or strength.get('id') or 'not set'}")
    if grant.get("termsOfUse"):
        words.append("terms of use")
    if grant.get("customAuthenticationFactors"):
        words.append("custom controls")
    return words


def _sessions(policy: dict[str, Any]) -> list[str]:
    """The session controls actually set: Graph returns the object with null members when none is configured."""
    return [name for name, value in (policy.get("sessionControls") or {}).items()
            if value not in (None, False, [], {}) and not name.startswith("@")]


def applies_to_exchange_clients(policy: dict[str, Any]) -> bool:
    """A policy that will start to govern Outlook's sign-ins to on-premises mailboxes once HMA is on.

    Inference, stated as such in the report: with HMA, Outlook asks Entra ID for a token whose client_id is Exchange
    Online (the Bearer challenge advertises client_id 00000002-0000-0ff1-ce00-000000000000), so policies that target
    Exchange Online (or all cloud apps) for modern clients now also apply to on-premises mailbox access.
    """
    if policy.get("state") not in ("enabled", REPORT_ONLY):
        return False
    if not _targets_exchange(policy) or not targets_users(policy):
        return False
    client_types = _lower(_conditions(policy).get("clientAppTypes"))
    modern = {"all", "browser", "mobileappsanddesktopclients"}
    if client_types and not client_types & modern:
        return False          # a legacy-only policy (e.g. the legacy block itself) does not touch HMA sign-ins
    return bool(_grants(policy) or _sessions(policy))


def describe_policy(policy: dict[str, Any]) -> str:
    grants = ", ".join(_grants(policy) + _sessions(policy)) or "no control set"
    state = policy.get("state")
    state = "report-only" if state == REPORT_ONLY else state or "state not set"
    name = policy.get("displayName") or policy.get("id") or "a policy without name or id"
    return f"{name} ({state}: {grants})"


def synced_identities(users: Any) -> dict[str, Any]:
    """The synced Entra ID users (onPremisesSyncEnabled true) as two lookups: ``by_sid``, each on-premises SID
    (onPremisesSecurityIdentifier, upper case) to its userPrincipalName, and ``upns``, every userPrincipalName in
    lower case. Built once and shared: HMA-ID-003 matches 50,000 mailboxes with it, HMA-ID-004 the administrators.
    A user without one of the three properties read is a fact not collected: an error.
    """
    from hma_check.evaluate.facts import MissingFact

    if type(users) is list and set(map(type, users)) <= {dict}:
        # plain users (watched ones log each read, in the order the loop below reads them, for the excerpt): the
        # same lookups built in passes of C, one per property (a user without one goes the long way, which says so)
        try:
            enabled, names, sids = (list(map(get, users)) for get in (_ENABLED, _UPN, _SID))
        except KeyError:
            pass
        else:
            synced = list(map(operator.is_, enabled, repeat(True)))
            synced_upns = [upn or "" for upn in compress(names, synced)]
            synced_sids = list(compress(sids, synced))
            keys = list(compress(synced_sids, synced_sids))   # the users with a SID to match by
            keys = list(map(str.upper if set(map(type, keys)) <= {str} else _upper, keys))
            return {"by_sid": dict(zip(keys, compress(synced_upns, synced_sids), strict=True)),
                    "upns": frozenset(map(str.lower, filter(None, synced_upns)))}
    by_sid: dict[str, str] = {}
    upns: set[str] = set()
    for user in users:
        if not _USER_KEYS <= user.keys():
            key = next(k for k in _USER_KEYS_IN_ORDER if k not in user)
            raise MissingFact("graph.users", f"a user has no {key} property")
        if user["onPremisesSyncEnabled"] is not True:
            continue
        upn = user["userPrincipalName"] or ""
        if user["onPremisesSecurityIdentifier"]:
            by_sid[_upper(user["onPremisesSecurityIdentifier"])] = upn
        if upn:
            upns.add(upn.lower())
    return {"by_sid": by_sid, "upns": frozenset(upns)}


def _upper(sid: Any) -> str:
    return sid.upper() if type(sid) is str else str(sid).upper()


def mailbox_identities(mailboxes: Any, users: Any) -> dict[str, Any]:
    """Match every user mailbox to a synced Entra ID user: by on-premises SID first, then by UPN. ``users`` is the
    users (graph.users) or what synced_identities made of them.

    The on-premises SID is what Entra Connect carries over unchanged (onPremisesSecurityIdentifier); the UPN is not:
    an on-premises UPN in a domain that is not verified is synchronized under <tenant>.onmicrosoft.com
    (https://learn.microsoft.com/microsoft-365/enterprise/prepare-a-non-routable-domain-for-directory-synchronization),
    so the same person can carry two UPNs and must sign in to Entra ID with the second.
    Returns the counts and lists the check reports: ``missing`` (neither matches), ``no_key`` (no SID and no UPN
    to match), ``upn_differs`` ('on-premises UPN (Entra ID: UPN)' for identities that differ only by UPN).
    A mailbox without a Sid property, or a user without the properties read, is a fact not collected: an error.
    """
    from hma_check.evaluate.facts import MissingFact

    synced = users if isinstance(users, dict) and users.keys() == {"by_sid", "upns"} else synced_identities(users)
    by_sid, by_upn = synced["by_sid"], synced["upns"]
    # counters in locals, not in the result's dict: this loop runs once per mailbox (50,000 and more)
    count = matched_by_sid = matched_by_upn = 0
    missing: list[str] = []
    no_key: list[Any] = []
    upn_differs: list[str] = []
    for mailbox in mailboxes:
        if mailbox.get("RecipientTypeDetails") != "UserMailbox":
            continue
        if "Sid" not in mailbox:
            raise MissingFact("exchange.mailboxes", f"mailbox {mailbox.get('Name')!r} has no Sid property (collect "
                                                    "Get-Mailbox with Sid)")
        count += 1
        upn, sid = mailbox.get("UserPrincipalName"), mailbox["Sid"]
        entra_upn = by_sid.get(sid.upper() if type(sid) is str else str(sid).upper()) if sid else None
        if entra_upn is not None:
            matched_by_sid += 1
            if not upn or (entra_upn != upn and entra_upn.lower() != upn.lower()):
                upn_differs.append(f"{upn or mailbox.get('Name')} (Entra ID: {entra_upn or 'no UPN'})")
        elif upn and upn.lower() in by_upn:
            matched_by_upn += 1
        elif upn or sid:
            missing.append(upn or f"{mailbox.get('Name')} ({sid})")
        else:
            no_key.append(mailbox.get("Name"))
    return {"count": count, "by_sid": matched_by_sid, "by_upn": matched_by_upn, "missing": missing,
            "no_key": no_key, "upn_differs": upn_differs}


_USER_KEYS_IN_ORDER = ("userPrincipalName", "onPremisesSyncEnabled", "onPremisesSecurityIdentifier")
_USER_KEYS = frozenset(_USER_KEYS_IN_ORDER)
_ENABLED = operator.itemgetter("onPremisesSyncEnabled")
_UPN = operator.itemgetter("userPrincipalName")
_SID = operator.itemgetter("onPremisesSecurityIdentifier")


# The Hybrid Agent publishes on-premises Exchange at https://<GUID>.resource.mailboxmigration.his.msappproxy.net/
# (https://learn.microsoft.com/exchange/hybrid-deployment/hybrid-agent).
HYBRID_AGENT_SUFFIX = ".resource.mailboxmigration.his.msappproxy.net"


def _host_of(value: Any) -> str:
    text = str(value or "").strip().lower()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].split(":", 1)[0]


def hybrid_agent_applications(service_principals: Any) -> list[str]:
    """The Application Proxy applications (graph.app_proxy_applications) that are a Hybrid Agent's: those whose
    published URL (onPremisesPublishing.externalUrl, or a URL of the service principal) is a host under
    resource.mailboxmigration.his.msappproxy.net. One per match: 'name (appId …): external URL -> internal URL'.

    An App Proxy application whose application object could not be read (null) and whose service principal names no
    such host cannot be ruled out: that is a fact not collected, so the check is ERROR and says to verify by hand.
    """
    from hma_check.evaluate.facts import MissingFact

    found = []
    for sp in service_principals:
        if "application" not in sp:
            raise MissingFact("graph.app_proxy_applications", "an App Proxy service principal was read without its "
                                                              "application (onPremisesPublishing)")
        application = sp["application"]
        publishing = (application or {}).get("onPremisesPublishing") or {}
        urls = [publishing.get("externalUrl"), publishing.get("alternateUrl"), sp.get("homepage"),
                *(sp.get("servicePrincipalNames") or []), *(sp.get("replyUrls") or [])]
        hit = next((u for u in urls if _host_of(u).endswith(HYBRID_AGENT_SUFFIX)), None)
        name = sp.get("displayName") or "not set"
        if hit is not None:
            target = publishing.get("internalUrl")
            found.append(f"{name} (appId {sp.get('appId')}): {hit}" + (f" -> {target}" if target else ""))
        elif application is None:
            raise MissingFact("graph.app_proxy_applications",
                              f"has no application object for the App Proxy application {name} (appId "
                              f"{sp.get('appId')}), so its published URL is unknown: verify by hand that it is not "
                              "the Hybrid Agent")
    return found
