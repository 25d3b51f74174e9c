"""Real Graph shapes through the real collector (msgraph-sdk, azure-identity) and the shipped checks.

Microsoft's documented example responses are served verbatim by the lab's Graph service; the lab's Hybrid Agent and
Conditional Access policies are served as Graph returns them (a beta application with onPremisesPublishing, a
property annotation inside grantControls).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from hma_check.collect.graph.collector import collect_graph
from hma_check.contract.snapshot import iso_utc, utc_now
from hma_check.evaluate.checks import CheckSet
from hma_check.evaluate.engine import evaluate
from hma_lab.graph_service import GraphService
from hma_lab.tenants import load_tenants
from tests.support import baseline
from tests.support.graph_lab import lab_environ, target_for

pytestmark = pytest.mark.xdist_group("graph-real-bodies")
TENANT = baseline.TENANT
DOCS = Path(__file__).resolve().parent.parent / "data" / "graph-docs"
EXO_SP = "/v1.0/servicePrincipals(appId='00000002-0000-0ff1-ce00-000000000000')"
ENDPOINT = "087f1c2e-8711-4176-ab4f-4b1c1777a350"


def tenant_entry() -> dict:
    graph = baseline._tenant_sources()
    return {
        "id": TENANT, "display_name": "Contoso", "initial_domain": "contoso.onmicrosoft.com",
        "domains": graph["graph.domains"], "on_premises_sync_enabled": True, "on_premises_last_sync_date_time": "-6h",
        "exo_service_principal": graph["graph.exo_service_principal"], "users": graph["graph.users"],
        "conditional_access_policies": graph["graph.conditional_access_policies"],
        "subscribed_skus": graph["graph.subscribed_skus"],
        "app_proxy_applications": [{"displayName": "Contoso Intranet",
                                    "externalUrl": "https://intranet-contoso.msappproxy.net/",
                                    "internalUrl": "http://intranet.contoso.local/"}],
    }


@pytest.fixture
def lab():
    with GraphService(load_tenants([tenant_entry()])) as service:
        yield service


def collect(lab) -> dict:
    return {r.name: r for r in collect_graph([target_for(lab, TENANT)], environ=lab_environ(lab), retry_delay=0)}


def evaluated(results: dict, catalogue, check_ids) -> dict:
    """The baseline organisation with every graph.* source replaced by what the collector read."""
    snapshot = baseline.build()
    snapshot.collected_at = iso_utc(utc_now())
    for key in [k for k in snapshot.sources if k.startswith("graph.")]:
        del snapshot.sources[key]
    for result in results.values():
        snapshot.add(result)
    checks = [c for c in catalogue.checks if c.id in check_ids]
    out: dict = {}
    for finding in evaluate(CheckSet(checks=checks, areas=catalogue.areas), snapshot).findings:
        out.setdefault(finding.check_id, []).append(finding)
    return out


def without_annotations(obj):
    if isinstance(obj, dict):
        return {k: without_annotations(v) for k, v in obj.items() if "@odata." not in k}
    if isinstance(obj, list):
        return [without_annotations(v) for v in obj]
    return obj


def has_annotation(obj) -> bool:
    if isinstance(obj, dict):
        return any("@odata." in k or has_annotation(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(has_annotation(v) for v in obj)
    return False


# --------------------------------------------------------------------------- Microsoft's documented examples

SERVED = {
    "graph.exo_service_principal": (EXO_SP, "serviceprincipal-get.json"),
    "graph.organization": ("/v1.0/organization", "organization-get.json"),
    "graph.domains": ("/v1.0/domains", "domain-list.json"),
    "graph.users": ("/v1.0/users", "user-list.json"),
    "graph.conditional_access_policies": ("/v1.0/identity/conditionalAccess/policies",
                                          "conditionalaccessroot-list-policies.json"),
    "graph.security_defaults": ("/v1.0/policies/identitySecurityDefaultsEnforcementPolicy",
                                "identitysecuritydefaultsenforcementpolicy-get.json"),
}


def test_documented_bodies_are_read_verbatim_and_what_they_lack_is_never_a_pass(lab, catalogue):
    bodies = {}
    for source, (path, name) in SERVED.items():
        bodies[source] = json.loads((DOCS / name).read_text(encoding="utf-8"))
        lab.serve_verbatim(TENANT, path, bodies[source])
    results = collect(lab)
    for source, body in bodies.items():
        result = results[source]
        assert result.ok, (source, result.error)
        expected = without_annotations(body["value"] if "value" in body else body)
        assert result.data == expected, source
    assert {(r.method, r.route) for r in lab.requests if r.method != "GET"} == {("POST", "token")}

    findings = evaluated(results, catalogue, {"HMA-SPN-001", "HMA-HYG-001", "HMA-ID-001", "HMA-TENANT-001",
                                              "HMA-ID-003", "HMA-ID-006", "HMA-ID-007", "HMA-ID-008",
                                              "HMA-ID-009"})
    status = {check_id: [f.status for f in found] for check_id, found in findings.items()}
    # What the bodies say is decided: no SPN registered, no key credential, security defaults on, both
    # policies disabled (so nothing blocks legacy authentication and nothing will apply).
    assert status["HMA-SPN-001"] == ["FAIL"]
    assert status["HMA-HYG-001"] == ["PASS"]
    assert status["HMA-ID-009"] == ["NOTE"]
    assert status["HMA-ID-007"] == ["NOTE"]
    assert status["HMA-ID-008"] == ["PASS"]
    # What they lack (the organization's id and sync state, the domains' isVerified, the users' sync properties)
    # is ERROR with the missing fact named, never a PASS.
    # (the first missing property stops the evaluation: for HMA-ID-001 that is the id its subject names)
    lacking = {"HMA-ID-001": ("onPremisesSyncEnabled", "'id'"), "HMA-TENANT-001": ("'id'",),
               "HMA-ID-003": ("onPremisesSyncEnabled",), "HMA-ID-006": ("isVerified",)}
    for check_id, names in lacking.items():
        assert status[check_id] and set(status[check_id]) == {"ERROR"}, (check_id, status[check_id])
        assert all(any(name in (f.reason or "") for name in names) for f in findings[check_id]), \
            [f.reason for f in findings[check_id]]


def test_the_documented_policy_entity_is_described_in_words(catalogue):
    policy = json.loads((DOCS / "conditionalaccesspolicy-get.json").read_text(encoding="utf-8"))
    enabled = dict(without_annotations(policy), state="enabled")
    snapshot = baseline.build()
    snapshot.sources[f"graph.conditional_access_policies@{TENANT}"].data.append(enabled)
    check = [c for c in catalogue.checks if c.id == "HMA-ID-008"]
    [finding] = evaluate(CheckSet(checks=check, areas=catalogue.areas), snapshot).findings
    assert finding.status == "NOTE"
    assert ("Demo app for documentation (enabled: mfa, compliantDevice, domainJoinedDevice, approvedApplication, "
            "compliantApplication, terms of use, cloudAppSecurity, signInFrequency)") in finding.actual


# ----------------------------------------------------------------------------------- the Hybrid Agent in Entra ID

def test_the_hybrid_agent_is_found_by_its_application_proxy_publishing(lab, catalogue):
    tenant = lab.tenants[TENANT]
    tenant.applications += load_tenants([dict(tenant_entry(), app_proxy_applications=[], hybrid_agent={
        "endpoint": ENDPOINT, "internal_url": "https://ex01.contoso.local/"})])[0].applications
    results = collect(lab)
    apps = results["graph.app_proxy_applications"]
    assert apps.ok, apps.error
    assert [a["displayName"] for a in apps.data] == ["Contoso Intranet", ENDPOINT]
    agent = apps.data[1]
    # The service principal names no msappproxy URL: only the beta application's onPremisesPublishing does.
    assert not any("msappproxy" in str(v) for k, v in agent.items() if k != "application")
    assert agent["application"]["onPremisesPublishing"]["externalUrl"] == \
        f"https://{ENDPOINT}.resource.mailboxmigration.his.msappproxy.net:443/"
    assert "tags/any(t:t eq 'WindowsAzureActiveDirectoryOnPremApp')" in apps.command
    assert "/beta/applications(appId='<appId>')?$select=id,appId,displayName,onPremisesPublishing" in apps.command
    beta = [r for r in lab.requests if r.path.startswith("/beta/")]
    assert len(beta) == 2 and all(r.method == "GET" and r.status == 200 for r in beta)

    [finding] = evaluated(results, catalogue, {"HMA-TOPO-006"})["HMA-TOPO-006"]
    assert finding.status == "FAIL"
    assert f"{ENDPOINT}.resource.mailboxmigration.his.msappproxy.net" in finding.actual
    assert "-> https://ex01.contoso.local/" in finding.actual


def test_an_ordinary_application_proxy_app_is_not_the_hybrid_agent(lab, catalogue):
    [finding] = evaluated(collect(lab), catalogue, {"HMA-TOPO-006"})["HMA-TOPO-006"]
    assert finding.status == "PASS" and "1 Application Proxy application(s) read" in finding.actual


def test_when_the_applications_cannot_be_read_the_check_says_verify_by_hand(lab, catalogue):
    lab.inject(TENANT, "applications", 403)
    results = collect(lab)
    apps = results["graph.app_proxy_applications"]
    assert apps.status == "error"
    assert "/beta/applications(appId=" in apps.error and "Application.Read.All" in apps.error
    [finding] = evaluated(results, catalogue, {"HMA-TOPO-006"})["HMA-TOPO-006"]
    assert finding.status == "ERROR" and "graph.app_proxy_applications" in finding.reason
    assert "verify by hand" in finding.expected


def test_an_application_missing_from_the_tenant_is_an_error_not_a_pass(lab, catalogue):
    tenant = lab.tenants[TENANT]
    # the service principal's application object is not in the tenant: Graph answers 404
    application = tenant.applications[0]["application"]
    tenant.applications[0]["application"] = dict(application, appId="00000000-0000-4000-8000-000000000000")
    results = collect(lab)
    assert results["graph.app_proxy_applications"].data[0]["application"] is None      # Graph's 404
    [finding] = evaluated(results, catalogue, {"HMA-TOPO-006"})["HMA-TOPO-006"]
    assert finding.status == "ERROR" and "verify by hand" in finding.reason


# --------------------------------------------------------------------------------------- Conditional Access

def test_nested_annotations_are_stripped_and_an_authentication_strength_applies(lab, catalogue):
    tenant = lab.tenants[TENANT]
    tenant.conditional_access_policies.append(copy.deepcopy({
        "id": "3c4d5e6f-0000-4000-8000-000000000010", "displayName": "Require MFA strength for all apps",
        "state": "enabled", "sessionControls": None,
        "conditions": {"clientAppTypes": ["all"], "clientApplications": None,
                       "applications": {"includeApplications": ["All"], "excludeApplications": []},
                       "users": {"includeUsers": ["All"], "excludeUsers": []}},
        "grantControls": {"operator": "OR", "builtInControls": [], "customAuthenticationFactors": [],
                          "termsOfUse": [], "authenticationStrength": {
                              "id": "00000000-0000-0000-0000-000000000002", "displayName": "Multifactor authentication",
                              "policyType": "builtIn", "requirementsSatisfied": "mfa",
                              "combinationConfigurations@odata.context": "https://graph.microsoft.com/v1.0/$metadata#"
                              "identity/conditionalAccess/policies('3c4d5e6f')/grantControls/authenticationStrength/"
                              "combinationConfigurations",
                              "allowedCombinations": ["fido2", "password,microsoftAuthenticatorPush"]}}}))
    results = collect(lab)
    policies = results["graph.conditional_access_policies"].data
    assert not has_annotation(policies), policies
    assert policies[1]["grantControls"]["authenticationStrength"]["displayName"] == "Multifactor authentication"
    [finding] = evaluated(results, catalogue, {"HMA-ID-008"})["HMA-ID-008"]
    assert finding.status == "NOTE"
    assert "Require MFA strength for all apps (enabled: authentication strength Multifactor authentication)" \
        in finding.actual
