"""Entra ID policy logic used by the identity checks: Conditional Access scope and legacy-authentication blocking.

The legacy-block rule is the one Maester (Test-MtCisaBlockLegacyAuth), ScubaGear (MS.AAD.1.1v1) and Prowler
(entra_legacy_authentication_blocked) share: an enabled policy that blocks the 'exchangeActiveSync' and 'other' client
app types for all users and all (or Exchange Online) applications. Report-only counts as not enforced, as in Prowler.
https://learn.microsoft.com/entra/identity/conditional-access/policy-block-legacy-authentication
"""

from __future__ import annotations

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
    if not _targets_exchange(policy):
        return None
    state = policy.get("state")
    if state == "enabled":
        return "enforced"
    if state == REPORT_ONLY:
        return "report-only"
    return None


def applies_to_exchange_clients(policy: dict[str, Any]) -> bool:
    """A policy that will start to govern Outlook's sign-ins to on-premises mailboxes once HMA is on.

    Inference, stated as such in the report: with HMA, Outlook asks Entra ID for a token whose client_id is Exchange
    Online (the Bearer challenge advertises client_id 00000002-0000-0ff1-ce00-000000000000), so policies that target
    Exchange Online (or all cloud apps) for modern clients now also apply to on-premises mailbox access.
    """
    if policy.get("state") not in ("enabled", REPORT_ONLY):
        return False
    if not _targets_exchange(policy):
        return False
    client_types = _lower(_conditions(policy).get("clientAppTypes"))
    modern = {"all", "browser", "mobileappsanddesktopclients"}
    if client_types and not client_types & modern:
        return False          # a legacy-only policy (e.g. the legacy block itself) does not touch HMA sign-ins
    return bool((policy.get("grantControls") or {}).get("builtInControls") or policy.get("sessionControls"))


def describe_policy(policy: dict[str, Any]) -> str:
    grants = ", ".join((policy.get("grantControls") or {}).get("builtInControls") or []) or "session controls"
    state = "report-only" if policy.get("state") == REPORT_ONLY else policy.get("state", "?")
    return f"{policy.get('displayName', policy.get('id', '?'))} ({state}: {grants})"
