"""The lab's token endpoint and Graph slice, driven with httpx over verified TLS, and the tenants: section."""

from __future__ import annotations

import ssl
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.support.graph_lab import CONTOSO, FABRIKAM, TENANTS_YAML
from hma_lab.graph_service import GraphService
from hma_lab.scenario import ScenarioError
from hma_lab.tenants import load_tenants, tenants_from_yaml

pytestmark = pytest.mark.xdist_group("graph-lab")
EXO = "00000002-0000-0ff1-ce00-000000000000"


@pytest.fixture(scope="module")
def lab():
    with GraphService(tenants_from_yaml(TENANTS_YAML), max_page_size=50) as service:
        with httpx.Client(verify=ssl.create_default_context(cafile=service.ca_path), base_url=service.url) as http:
            service.http = http
            yield service


def token(lab, tenant_id=CONTOSO, **form):
    data = {"grant_type": "client_credentials", "client_id": lab.client_id(tenant_id),
            "client_secret": lab.secret(tenant_id), "scope": "https://graph.microsoft.com/.default", **form}
    return lab.http.post(f"/{tenant_id}/oauth2/v2.0/token", data=data)


def graph(lab, path, tenant_id=CONTOSO, roles=None, method="GET"):
    bearer = lab.issue_token(tenant_id, roles)
    return lab.http.request(method, f"/v1.0{path}", headers={"Authorization": f"Bearer {bearer}"})


def test_token_endpoint_verifies_the_client_and_issues_a_signed_token_with_roles(lab):
    import jwt

    ok = token(lab)
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer"
    claims = jwt.decode(ok.json()["access_token"], options={"verify_signature": False})
    assert claims["tid"] == CONTOSO and claims["aud"] == "https://graph.microsoft.com"
    assert "Application.Read.All" in claims["roles"]
    keys = lab.http.get(f"/{CONTOSO}/discovery/v2.0/keys").json()["keys"]
    jwt.decode(ok.json()["access_token"], jwt.PyJWK(keys[0]).key, algorithms=["RS256"],
               audience="https://graph.microsoft.com")

    bad = token(lab, client_secret="not-it")
    assert bad.status_code == 401 and bad.json()["error_codes"] == [7000215]
    other_tenant_app = token(lab, client_id=lab.client_id(FABRIKAM))
    assert other_tenant_app.status_code == 400 and "AADSTS700016" in other_tenant_app.json()["error_description"]
    assert token(lab, scope="https://outlook.office365.com/.default").json()["error_codes"] == [500011]
    unknown = lab.http.post("/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token", data={})
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002]
    discovery = lab.http.get("/contoso.com/v2.0/.well-known/openid-configuration").json()
    assert discovery["token_endpoint"] == f"{lab.url}/contoso.com/oauth2/v2.0/token"


def test_graph_routes_answer_graph_json_with_select_filter_and_paging(lab):
    sp = graph(lab, f"/servicePrincipals(appId='{EXO}')?$select=id,servicePrincipalNames")
    assert sp.status_code == 200 and sp.headers["content-type"].startswith("application/json;odata.metadata=minimal")
    assert set(sp.json()) == {"@odata.context", "id", "servicePrincipalNames"}
    filtered = graph(lab, f"/servicePrincipals?$filter=appId eq '{EXO}'&$select=appId").json()["value"]
    assert filtered == [{"appId": EXO}]
    assert graph(lab, "/servicePrincipals?$filter=appId eq 'nope'").json()["value"] == []
    assert graph(lab, "/servicePrincipals?$filter=startswith(displayName,'O')").status_code == 400
    assert graph(lab, f"/servicePrincipals(appId='{EXO}')", FABRIKAM, roles={"Directory.Read.All"}).status_code == 200

    first = graph(lab, "/users?$select=userPrincipalName&$top=999").json()
    assert len(first["value"]) == 50 and set(first["value"][0]) == {"userPrincipalName"}
    next_link = first["@odata.nextLink"]
    assert next_link.startswith(f"{lab.url}/v1.0/users?") and "$select=userPrincipalName" in next_link
    bearer = {"Authorization": f"Bearer {lab.issue_token(CONTOSO)}"}
    second = lab.http.get(next_link, headers=bearer).json()
    assert second["value"][0]["userPrincipalName"] != first["value"][0]["userPrincipalName"]
    assert graph(lab, "/users?$top=1000").json()["error"]["code"] == "Request_UnsupportedQuery"
    assert graph(lab, "/users?$skiptoken=forged").status_code == 400
    # The SDK's "v1.0//domains" (trailing-slash base URL) is tolerated as real Graph does.
    assert lab.http.get("/v1.0//domains", headers=bearer).status_code == 200


def test_graph_refuses_what_it_should_in_graph_shape(lab):
    denied = graph(lab, "/users", roles={"Organization.Read.All"})
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert error["code"] == "Authorization_RequestDenied" and error["innerError"]["request-id"]
    assert graph(lab, "/identity/conditionalAccess/policies", roles=set()).json()["error"]["code"] == "AccessDenied"
    assert lab.http.get("/v1.0/domains").json()["error"]["code"] == "InvalidAuthenticationToken"
    expired = lab.issue_token(CONTOSO, lifetime=-600)
    assert lab.http.get("/v1.0/domains", headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    assert graph(lab, "/groups").json()["error"]["code"] == "BadRequest"
    # A write is refused and logged, so tests elsewhere can prove the collector never sends one.
    lab.clear_log()
    assert graph(lab, f"/servicePrincipals(appId='{EXO}')", method="PATCH").status_code == 405
    assert [(r.method, r.route, r.status) for r in lab.requests] == [("PATCH", "service_principals", 405)]


def test_injected_faults_count_down_and_carry_retry_after(lab):
    lab.inject(CONTOSO, "organization", 429, times=2, retry_after=7)
    try:
        first, second, third = (graph(lab, "/organization") for _ in range(3))
        assert (first.status_code, second.status_code, third.status_code) == (429, 429, 200)
        assert first.headers["Retry-After"] == "7" and first.json()["error"]["code"] == "TooManyRequests"
        assert graph(lab, "/organization", FABRIKAM).status_code == 200  # faults are per tenant
        lab.inject(CONTOSO, "token", 503, times=1)
        assert token(lab).status_code == 503 and token(lab).status_code == 200
    finally:
        lab.clear_faults()


def test_several_tenants_share_one_graph_host_and_tokens_decide_the_tenant(lab):
    contoso = graph(lab, "/organization").json()["value"][0]
    fabrikam = graph(lab, "/organization", FABRIKAM).json()["value"][0]
    assert (contoso["id"], fabrikam["id"]) == (CONTOSO, FABRIKAM)
    assert contoso["onPremisesLastSyncDateTime"] == "2026-11-20T06:00:00Z"
    initial = [d for d in contoso["verifiedDomains"] if d["isInitial"]]
    assert [d["name"] for d in initial] == ["contoso.onmicrosoft.com"]


# ------------------------------------------------------------------------------------------ tenants: section

def bad(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        tenants_from_yaml(text, path="lab.yaml")
    return str(info.value)


TENANT = """tenants:
  - id: 6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21
    display_name: Contoso
    initial_domain: contoso.onmicrosoft.com
    domains:
      - {id: contoso.onmicrosoft.com, isDefault: true}
"""


@pytest.mark.parametrize(("extra", "expected"), [
    ("    generate_users: {count: -1}\n", "lab.yaml:7: tenants[0].generate_users.count: must be an integer"),
    ("    faults: [{route: usrs, status: 429}]\n", "lab.yaml:7: tenants[0].faults[0].route: must be one of token"),
    ("    faults: [{route: users, status: 200}]\n", "tenants[0].faults[0].status: must be an HTTP error status"),
    ("    users: [{mail: a@b.c}]\n", "lab.yaml:7: tenants[0].users[0].userPrincipalName: must be a UPN"),
    ("    conditional_access_policies: [{displayName: x, state: on}]\n", "state: must be one of enabled"),
    ("    app: {client_id: abc}\n", "tenants[0].app.client_id: must be a GUID"),
    ("    exo_service_principal: {servicePrincipalNames: https://mail/}\n", "servicePrincipalNames: must be a list"),
    ("    on_premises_last_sync_date_time: 2026-01-01\n", "must be a quoted ISO 8601 UTC time"),
    ("    on_premises_last_sync_date_time: '2026-01-01T00:00:00'\n", "must be a quoted ISO 8601 UTC time"),
    ("    secuirty_defaults: true\n", "lab.yaml:7: tenants[0].secuirty_defaults: unknown key"),
])
def test_tenants_section_errors_name_file_line_and_path(extra, expected):
    assert expected in bad(TENANT + extra)


def test_tenants_section_structural_errors():
    assert bad("tenants: {id: x}\n") == "lab.yaml:1: tenants: must be a list of tenants"
    assert "lab.yaml:6: tenants[0].domains[0].authenticationType: must be Managed or Federated" in bad(
        TENANT.replace("isDefault: true}", "authenticationType: Cloud}"))
    assert "initial_domain: contoso.com is not one of the tenant's domains" in bad(
        TENANT.replace("initial_domain: contoso.onmicrosoft.com", "initial_domain: contoso.com"))
    assert "duplicate tenant id" in bad(TENANT + TENANT.split("\n", 1)[1])
    assert bad("tenants: [\n").startswith("lab.yaml:2: YAML syntax")
    assert "missing display_name" in bad("tenants:\n  - {id: 6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21}\n")


def test_tenants_model_defaults_and_generated_users_are_lazy_and_stable():
    [tenant] = load_tenants([{"id": CONTOSO.upper(), "display_name": "C", "initial_domain": "c.onmicrosoft.com",
                              "domains": [{"id": "c.onmicrosoft.com"}, {"id": "c.com", "isDefault": True}],
                              "generate_users": {"count": 50000}, "on_premises_last_sync_date_time": "-2h"}])
    assert tenant.id == CONTOSO and tenant.user_count == 50000
    last_sync = datetime.fromisoformat(tenant.on_premises_last_sync_date_time.replace("Z", "+00:00"))
    assert timedelta(hours=1, minutes=59) < datetime.now(timezone.utc) - last_sync < timedelta(hours=2, minutes=1)
    assert tenant.users_between(49999, 60000)[0]["userPrincipalName"] == "user049999@c.com"
    assert tenant.users_between(10, 11) == tenant.users_between(10, 11)
    assert tenant.exo_service_principal["servicePrincipalNames"] == []
    assert tenant.app.roles >= {"Application.Read.All", "User.Read.All"}
    assert load_tenants(None) == []


def test_sync_exchange_users_mirrors_entra_connect_and_skips_critical_system_accounts():
    entry = {"id": CONTOSO, "display_name": "C", "initial_domain": "c.onmicrosoft.com",
             "domains": [{"id": "c.onmicrosoft.com"}], "sync_exchange_users": True,
             "users": [{"userPrincipalName": "bob@c.com", "onPremisesSyncEnabled": None}]}
    people = [{"Name": "alice", "UserPrincipalName": "alice@c.com", "PrimarySmtpAddress": "alice@c.com"},
              {"Name": "bob", "UserPrincipalName": "bob@c.com"},
              {"Name": "Administrator", "UserPrincipalName": "administrator@c.com",
               "Sid": "S-1-5-21-1-2-3-500"},
              {"Name": "Jane", "UserPrincipalName": "jane@c.com", "Sid": "S-1-5-21-1-2-3-1104"}]
    [tenant] = load_tenants([entry], exchange_users=people)
    users = {u["userPrincipalName"]: u for u in tenant.users}
    assert set(users) == {"alice@c.com", "bob@c.com", "jane@c.com"}          # no built-in Administrator (RID 500)
    assert users["bob@c.com"]["onPremisesSyncEnabled"] is None                 # the explicit entry wins
    assert users["jane@c.com"]["onPremisesSecurityIdentifier"] == "S-1-5-21-1-2-3-1104"
    assert users["alice@c.com"]["onPremisesSyncEnabled"] is True
    with pytest.raises(ScenarioError, match="sync_exchange_users: needs the scenario's mailboxes"):
        load_tenants([entry])
