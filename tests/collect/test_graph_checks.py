"""The shipped checks fed by real Graph collection: the lab's tenant, read with msgraph-sdk, then run_report() on the
saved evidence.

Exchange and probe facts come from the known-good baseline; every graph.* source comes from the collector. Each
case changes the tenant the way a real one goes wrong and states what the checks must say.
"""

from __future__ import annotations

import copy
import json

import pytest

from tests.support import baseline
from tests.support.graph_lab import lab_environ, target_for
from hma_check.collect.graph.collector import collect_graph
from hma_check.evaluate.engine import evaluate
from hma_check.contract.findings import Finding
from hma_lab.graph_service import GraphService
from hma_lab.tenants import load_tenants
from hma_check.commands.pipeline import load_all_checks, run_report
from hma_check.contract.snapshot import iso_utc, load_snapshot, utc_now

pytestmark = pytest.mark.xdist_group("graph-checks")
TENANT = baseline.TENANT
SECOND = "0b3f9a51-7e2c-4d8a-b6f4-2c9e1d7a5b30"
GRAPH_CHECKS = ("HMA-SPN-001", "HMA-SPN-002", "HMA-TENANT-001", "HMA-TENANT-002", "HMA-ID-001", "HMA-ID-002",
                "HMA-ID-003", "HMA-ID-004", "HMA-ID-006", "HMA-ID-007", "HMA-ID-008", "HMA-ID-009", "HMA-ID-010",
                "HMA-PROBE-003", "HMA-PROBE-010", "HMA-HYG-001")


def baseline_tenant(tenant_id: str = TENANT) -> dict:
    """The baseline's tenant as a scenario entry, so the lab serves what the baseline asserts."""
    graph = baseline._tenant_sources()
    org = graph["graph.organization"][0]
    return {
        "id": tenant_id, "display_name": org["displayName"], "initial_domain": "contoso.onmicrosoft.com",
        "domains": graph["graph.domains"], "on_premises_sync_enabled": True, "on_premises_last_sync_date_time": "-6h",
        "exo_service_principal": graph["graph.exo_service_principal"], "users": graph["graph.users"],
        "security_defaults": False, "conditional_access_policies": graph["graph.conditional_access_policies"],
        "subscribed_skus": graph["graph.subscribed_skus"],
    }


@pytest.fixture(scope="module")
def lab():
    with GraphService(load_tenants([baseline_tenant(), baseline_tenant(SECOND)])) as service:
        yield service


@pytest.fixture(scope="module")
def checks():
    return load_all_checks()


@pytest.fixture
def tenant(lab):
    """The lab's first tenant, restored after each test however the test changed it."""
    original = copy.deepcopy(lab.tenants[TENANT])
    yield lab.tenants[TENANT]
    lab.tenants[TENANT] = original


def scan(lab, out_dir, tenants=(TENANT,), exchange=None, checks=None):
    """Collect Graph from the lab, merge with the baseline's other facts and save evidence.json; then evaluate the
    saved file, with ``checks`` already loaded, or else through run_report() (every output file)."""
    snapshot = baseline.build()
    snapshot.collected_at = iso_utc(utc_now())
    for key in [k for k in snapshot.sources if k.startswith("graph.")]:
        del snapshot.sources[key]
    for change in exchange or []:
        change(snapshot)
    for result in collect_graph([target_for(lab, t) for t in tenants], environ=lab_environ(lab), retry_delay=0):
        snapshot.add(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    snapshot.save(out_dir / "evidence.json")
    if checks is not None:
        findings = evaluate(checks, load_snapshot(out_dir / "evidence.json")).findings
    else:
        run_report(out_dir / "evidence.json", out_dir)
        findings = [Finding.from_json(f) for f in json.loads((out_dir / "findings.json").read_text())["findings"]]
    by_check: dict[str, list] = {}
    for finding in findings:
        by_check.setdefault(finding.check_id, []).append(finding)
    return by_check


def status(findings, check_id, scope=None):
    return [f.status for f in findings[check_id] if scope is None or f.scope == scope]


def test_graph_fed_checks_pass_on_the_baseline_tenant(lab, tenant, tmp_path, checks):
    findings = scan(lab, tmp_path, checks=checks)
    assert {check_id: status(findings, check_id) for check_id in GRAPH_CHECKS} == {
        check_id: ["PASS"] * len(findings[check_id]) for check_id in GRAPH_CHECKS}
    assert all(findings[check_id] for check_id in GRAPH_CHECKS)
    [spn] = findings["HMA-SPN-001"]
    assert spn.scope == TENANT and any(s["key"] == f"graph.exo_service_principal@{TENANT}" for s in spn.sources)


def test_a_missing_spn_fails_and_the_runbook_adds_exactly_it_then_restores_the_captured_list(lab, tenant, tmp_path):
    names = tenant.exo_service_principal["servicePrincipalNames"]
    names.remove("https://autodiscover.contoso.com/")
    captured = list(names)
    [spn] = scan(lab, tmp_path)["HMA-SPN-001"]  # the whole pipeline: evidence.json -> run_report -> files
    assert spn.status == "FAIL" and "missing: autodiscover.contoso.com" in spn.actual
    assert "Update-MgServicePrincipal -ServicePrincipalId" in spn.enable
    assert "+ @('https://autodiscover.contoso.com/')" in spn.enable  # only the missing name is added
    assert "Update-MgServicePrincipal" in spn.rollback
    restored = spn.rollback.split("-ServicePrincipalNames ", 1)[1]
    assert restored.count("'") == 2 * len(captured) and "https://autodiscover.contoso.com/" not in restored
    assert "+ @('https://autodiscover.contoso.com/')" in (tmp_path / "enable.ps1").read_text()
    assert restored in (tmp_path / "rollback.ps1").read_text()


def test_a_refused_query_makes_its_checks_error_and_names_the_permission(lab, tenant, tmp_path, checks):
    tenant.app = type(tenant.app)(client_id=tenant.app.client_id, roles=tenant.app.roles - {"Application.Read.All"})
    findings = scan(lab, tmp_path, checks=checks)
    [spn] = findings["HMA-SPN-001"]
    assert spn.status == "ERROR" and "Application.Read.All" in spn.reason and "403" in spn.reason
    assert status(findings, "HMA-HYG-001") == ["ERROR"]
    assert status(findings, "HMA-ID-003") == ["PASS"]  # the other sources were still read


def test_identity_and_conditional_access_findings_follow_the_tenant(lab, tenant, tmp_path, checks):
    user3 = next(u for u in tenant.users if u["userPrincipalName"] == "user3@contoso.com")
    user3["onPremisesSyncEnabled"] = None
    tenant.domains[0]["authenticationType"] = "Federated"
    tenant.security_defaults = True
    tenant.conditional_access_policies[0]["state"] = "enabledForReportingButNotEnforced"
    tenant.conditional_access_policies.append({
        "id": "5e6f7a8b-0000-4000-8000-000000000002", "displayName": "Require MFA for all cloud apps",
        "state": "enabled", "conditions": {"clientAppTypes": ["all"], "applications": {
            "includeApplications": ["All"], "excludeApplications": []}, "users": {"includeUsers": ["All"]}},
        "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}})
    tenant.exo_service_principal["keyCredentials"] = [{
        "keyId": "1d6e1c55-0b3a-4d9e-9a57-3c0f6b3b7a11", "type": "AsymmetricX509Cert", "usage": "Verify",
        "displayName": "CN=Microsoft Exchange Server Auth Certificate", "startDateTime": "2025-01-01T00:00:00Z",
        "endDateTime": "2030-01-01T00:00:00Z"}]
    findings = scan(lab, tmp_path, checks=checks)
    [synced] = findings["HMA-ID-003"]
    assert synced.status == "FAIL" and "user3@contoso.com" in synced.actual
    assert {f.subject: f.status for f in findings["HMA-ID-006"]}["contoso.com"] == "WARN"
    assert status(findings, "HMA-ID-009") == ["WARN"]
    [legacy] = findings["HMA-ID-007"]
    assert legacy.status == "WARN" and "report-only" in legacy.actual
    [applying] = findings["HMA-ID-008"]
    assert applying.status == "WARN" and "Require MFA for all cloud apps" in applying.actual
    assert "(inference)" in applying.actual
    [keys] = findings["HMA-HYG-001"]
    assert keys.status == "WARN" and "Microsoft Exchange Server Auth Certificate" in keys.actual
    assert status(findings, "HMA-SPN-001") == ["PASS"]


def test_two_tenants_one_evosts_each_spns_checked_in_every_tenant(lab, tenant, tmp_path, checks):
    second = lab.tenants[SECOND]
    saved = copy.deepcopy(second.exo_service_principal)
    second.exo_service_principal["servicePrincipalNames"] = [
        n for n in second.exo_service_principal["servicePrincipalNames"] if "mail.contoso.com" not in n]
    try:
        def one_evosts_per_tenant(snapshot):
            servers = snapshot.sources["exchange.auth_servers"].data
            servers.append(dict(servers[0], Name=f"EvoSts - {SECOND[:8]}", Realm=SECOND))

        findings = scan(lab, tmp_path / "with", tenants=(TENANT, SECOND), exchange=[one_evosts_per_tenant], checks=checks)
        assert status(findings, "HMA-SPN-001", TENANT) == ["PASS"]
        [missing] = [f for f in findings["HMA-SPN-001"] if f.scope == SECOND]
        assert missing.status == "FAIL" and "mail.contoso.com" in missing.actual
        assert f"-TenantId '{SECOND}'" in missing.enable
        assert status(findings, "HMA-TENANT-001") == ["PASS", "PASS"]

        # Without the second EvoSts, that tenant has no AuthServer whose realm it is.
        findings = scan(lab, tmp_path / "without", tenants=(TENANT, SECOND), checks=checks)
        assert status(findings, "HMA-TENANT-001", SECOND) == ["FAIL"]
    finally:
        second.exo_service_principal = saved
