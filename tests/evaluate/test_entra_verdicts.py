"""Entra-fed verdicts that must hold on real tenants (issue 11, items 5, 10, 11 and 12).

Each case starts from the known-good baseline and changes the Graph facts the way a real tenant looks; the
comment on each test names the behaviour it pins and the Microsoft page it follows.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from hma_check.contract.findings import ERROR, PASS
from hma_check.evaluate.checks import CheckSet
from hma_check.evaluate.engine import evaluate
from hma_check.evaluate.facts import MissingFact
from hma_check.evaluate.filters import entra
from tests.support import baseline
from tests.support.baseline import apply_ops

TENANT = baseline.TENANT
SECOND = "0b3f9a51-7e2c-4d8a-b6f4-2c9e1d7a5b30"
GRAPH_KEY = f"graph.conditional_access_policies@{TENANT}"


def findings_of(catalogue, snapshot, check_id):
    check = next(c for c in catalogue.checks if c.id == check_id)
    return evaluate(CheckSet(checks=[check], areas=catalogue.areas), snapshot).findings


def with_policy(policy: dict) -> object:
    return apply_ops(baseline.build(), [{"append": [GRAPH_KEY], "value": policy}])


# ------------------------------------------------------------------------------------------- Conditional Access

# A policy whose grant is an authentication strength, as Graph lists it: builtInControls is empty, the strength
# sits in grantControls.authenticationStrength (https://learn.microsoft.com/graph/api/resources/conditionalaccessgrantcontrols).
MFA_STRENGTH_POLICY = {
    "id": "3c4d5e6f-0000-4000-8000-000000000010", "displayName": "Require MFA strength for Exchange Online",
    "state": "enabled", "sessionControls": None,
    "conditions": {"clientAppTypes": ["all"], "clientApplications": None,
                   "applications": {"includeApplications": ["00000002-0000-0ff1-ce00-000000000000"],
                                    "excludeApplications": [], "includeUserActions": []},
                   "users": {"includeUsers": ["All"], "excludeUsers": [], "includeGroups": [], "excludeGroups": [],
                             "includeRoles": [], "excludeRoles": [], "includeGuestsOrExternalUsers": None,
                             "excludeGuestsOrExternalUsers": None}},
    "grantControls": {"operator": "OR", "builtInControls": [], "customAuthenticationFactors": [], "termsOfUse": [],
                      "authenticationStrength": {
                          "id": "00000000-0000-0000-0000-000000000002", "displayName": "Multifactor authentication",
                          "policyType": "builtIn", "requirementsSatisfied": "mfa",
                          "allowedCombinations": ["fido2", "password,microsoftAuthenticatorPush"]}},
}

# A workload-identity policy: it targets service principals (clientApplications) and no user at all
# (https://learn.microsoft.com/entra/identity/conditional-access/workload-identity).
WORKLOAD_POLICY = {
    "id": "4d5e6f7a-0000-4000-8000-000000000011", "displayName": "Block service principals outside trusted IPs",
    "state": "enabled", "sessionControls": None,
    "conditions": {"clientAppTypes": ["all"],
                   "clientApplications": {"includeServicePrincipals": ["ServicePrincipalsInMyTenant"],
                                          "excludeServicePrincipals": []},
                   "applications": {"includeApplications": ["All"], "excludeApplications": []},
                   "users": {"includeUsers": ["None"], "excludeUsers": [], "includeGroups": [], "excludeGroups": [],
                             "includeRoles": [], "excludeRoles": []},
                   "locations": {"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]}},
    "grantControls": {"operator": "OR", "builtInControls": ["block"], "customAuthenticationFactors": [],
                      "termsOfUse": [], "authenticationStrength": None},
}


def test_an_authentication_strength_grant_applies_to_exchange_online_clients(catalogue):
    [finding] = findings_of(catalogue, with_policy(MFA_STRENGTH_POLICY), "HMA-ID-008")
    assert finding.status == "NOTE", finding.actual   # an info check: a note, never a warning
    assert "Require MFA strength for Exchange Online" in finding.actual
    assert "authentication strength Multifactor authentication" in finding.actual


def test_a_workload_identity_policy_is_not_a_user_policy(catalogue):
    snapshot = with_policy(WORKLOAD_POLICY)
    [applying] = findings_of(catalogue, snapshot, "HMA-ID-008")
    assert applying.status == PASS and "Block service principals" not in applying.actual


def test_a_graph_null_reads_not_set(catalogue):
    snapshot = apply_ops(baseline.build(), [{"set": [f"graph.organization@{TENANT}", 0, "onPremisesSyncEnabled"],
                                             "to": None}])
    [finding] = findings_of(catalogue, snapshot, "HMA-ID-001")
    assert finding.status == "FAIL"
    assert "onPremisesSyncEnabled not set" in finding.actual and "None" not in finding.actual
    policy = dict(MFA_STRENGTH_POLICY, displayName=None)
    [applying] = findings_of(catalogue, with_policy(policy), "HMA-ID-008")
    assert "None" not in applying.actual and MFA_STRENGTH_POLICY["id"] in applying.actual


# ------------------------------------------------------------------------------------------------- identities

def test_a_mailbox_user_is_matched_by_sid_first_and_a_upn_difference_is_named(catalogue):
    # Entra Connect synced user1 under another UPN (its on-premises UPN suffix is not a verified domain, for
    # example): same person, same onPremisesSecurityIdentifier, different userPrincipalName.
    snapshot = apply_ops(baseline.build(), [
        {"set": [f"graph.users@{TENANT}", 0, "userPrincipalName"], "to": "user1@contoso.onmicrosoft.com"}])
    [finding] = findings_of(catalogue, snapshot, "HMA-ID-003")
    assert finding.status == PASS, finding.actual
    assert "1 differ only by UPN" in finding.actual
    assert "user1@contoso.com (Entra ID: user1@contoso.onmicrosoft.com)" in finding.actual


def test_a_sid_that_matches_no_synced_user_falls_back_to_the_upn(catalogue):
    # A linked mailbox in a resource forest: its Sid is the disabled resource account's, the synced user is the
    # account forest's; the UPN still finds it.
    snapshot = apply_ops(baseline.build(), [
        {"set": ["exchange.mailboxes", 1, "Sid"], "to": "S-1-5-21-3623811015-3361044348-30300820-4242"}])
    [finding] = findings_of(catalogue, snapshot, "HMA-ID-003")
    assert finding.status == PASS, finding.actual
    snapshot = apply_ops(snapshot, [{"set": ["exchange.mailboxes", 1, "UserPrincipalName"],
                                     "to": "someone.else@contoso.com"}])
    [finding] = findings_of(catalogue, snapshot, "HMA-ID-003")
    assert finding.status == "FAIL" and "someone.else@contoso.com" in finding.actual


def _matched_one_by_one(mailboxes, users):
    """mailbox_identities as its first version did it, one user and one mailbox at a time: the oracle the faster
    passes are held to."""
    by_sid, by_upn = {}, set()
    for user in users:
        if user["onPremisesSyncEnabled"] is not True:
            continue
        upn = user["userPrincipalName"] or ""
        if user["onPremisesSecurityIdentifier"]:
            by_sid[str(user["onPremisesSecurityIdentifier"]).upper()] = upn
        if upn:
            by_upn.add(upn.lower())
    result = {"count": 0, "by_sid": 0, "by_upn": 0, "missing": [], "no_key": [], "upn_differs": []}
    for mailbox in mailboxes:
        if mailbox.get("RecipientTypeDetails") != "UserMailbox":
            continue
        result["count"] += 1
        upn, sid = mailbox.get("UserPrincipalName"), mailbox["Sid"]
        entra_upn = by_sid.get(str(sid).upper()) if sid else None
        if entra_upn is not None:
            result["by_sid"] += 1
            if not upn or entra_upn.lower() != upn.lower():
                result["upn_differs"].append(f"{upn or mailbox.get('Name')} (Entra ID: {entra_upn or 'no UPN'})")
        elif upn and upn.lower() in by_upn:
            result["by_upn"] += 1
        elif upn or sid:
            result["missing"].append(upn or f"{mailbox.get('Name')} ({sid})")
        else:
            result["no_key"].append(mailbox.get("Name"))
    return result


_UPNS = st.sampled_from(["a@contoso.com", "A@Contoso.com", "b@contoso.com", "b@contoso.onmicrosoft.com", "", None])
_SIDS = st.sampled_from(["S-1-5-21-1-1001", "s-1-5-21-1-1001", "S-1-5-21-1-1002", "", None])
_USERS = st.lists(st.fixed_dictionaries({"userPrincipalName": _UPNS, "onPremisesSecurityIdentifier": _SIDS,
                                         "onPremisesSyncEnabled": st.sampled_from([True, False, None])}), max_size=8)
_MAILBOXES = st.lists(st.fixed_dictionaries(
    {"Name": st.sampled_from(["A", "B"]), "UserPrincipalName": _UPNS, "Sid": _SIDS,
     "RecipientTypeDetails": st.sampled_from(["UserMailbox", "SharedMailbox"])}), max_size=8)


@given(_MAILBOXES, _USERS)
@settings(max_examples=150, deadline=None)
def test_mailbox_identities_matches_as_one_at_a_time_would(mailboxes, users):
    expected = _matched_one_by_one(mailboxes, users)
    assert entra.mailbox_identities(mailboxes, users) == expected                            # the passes of C
    assert entra.mailbox_identities(mailboxes, (user for user in users)) == expected         # user by user
    assert entra.mailbox_identities(mailboxes, entra.synced_identities(users)) == expected   # shared, as checks do


def test_mailbox_identities_names_the_first_property_a_user_lacks():
    users = [{"userPrincipalName": "a@contoso.com", "onPremisesSyncEnabled": True, "onPremisesSecurityIdentifier": None},
             {"userPrincipalName": "b@contoso.com", "onPremisesSecurityIdentifier": None}]
    with pytest.raises(MissingFact, match="a user has no onPremisesSyncEnabled property"):
        entra.mailbox_identities([], users)
    with pytest.raises(MissingFact, match="has no Sid property"):
        entra.mailbox_identities([{"Name": "A", "RecipientTypeDetails": "UserMailbox"}], users[:1])


# ------------------------------------------------------------------------------------------------ multi-tenant

PER_TENANT = ("HMA-TOPO-006", "HMA-SPN-001", "HMA-SPN-002", "HMA-TENANT-001", "HMA-ID-001", "HMA-ID-002",
              "HMA-ID-006", "HMA-ID-007", "HMA-ID-008", "HMA-ID-009", "HMA-ID-010", "HMA-OWA-004",
              "HMA-HYG-001")


def with_unscanned_tenant():
    snapshot = baseline.build()
    servers = snapshot.sources["exchange.auth_servers"].data
    servers.append(dict(servers[0], Name=f"EvoSts - {SECOND}", Realm=SECOND, DomainName=["fabrikam.onmicrosoft.com"]))
    return snapshot


@pytest.mark.parametrize("check_id", PER_TENANT)
def test_an_evosts_tenant_that_was_not_scanned_is_an_error_for_every_per_tenant_check(catalogue, check_id):
    findings = findings_of(catalogue, with_unscanned_tenant(), check_id)
    unscanned = [f for f in findings if f.scope == SECOND or SECOND in f.subject]
    assert unscanned and all(f.status == ERROR for f in unscanned), [(f.subject, f.status) for f in findings]
    assert all("not collected" in (f.reason or "") for f in unscanned)
    # The scanned tenant is still decided on its own.
    assert any(f.status == PASS for f in findings), [(f.subject, f.status, f.reason) for f in findings]


def test_users_of_an_unscanned_tenant_cannot_be_called_unsynced(catalogue):
    # A mailbox user may be a synced user of the tenant nobody read: the aggregate check cannot decide.
    [finding] = findings_of(catalogue, with_unscanned_tenant(), "HMA-ID-003")
    assert finding.status == ERROR and SECOND in finding.reason
