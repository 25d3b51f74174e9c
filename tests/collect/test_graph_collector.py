"""The Graph collector with the real msgraph-sdk and azure-identity against the lab's HTTPS token and Graph service."""

from __future__ import annotations

import json
import subprocess
import time
import sys

import pytest

from tests.support.graph_lab import CONTOSO, FABRIKAM, NORTHWIND, TENANTS_YAML, lab_environ, target_for
from hma_check.collect.graph.collector import QUERIES, collect_graph
from hma_check.collect.graph.config import parse_graph_section
from hma_check.errors import ConfigError
from hma_lab.graph_service import GraphService
from hma_lab.tenants import tenants_from_yaml
from hma_check.contract.snapshot import Snapshot, loads_snapshot

pytestmark = pytest.mark.xdist_group("graph-collector")
SOURCES = [q.source for q in QUERIES]
PAGE = 50  # the lab pages /users by 50, so 120 users come in three pages


@pytest.fixture(scope="module")
def lab():
    with GraphService(tenants_from_yaml(TENANTS_YAML), max_page_size=PAGE) as service:
        yield service


@pytest.fixture
def fresh(lab):
    lab.clear_log()
    lab.clear_faults()
    yield lab
    lab.clear_faults()


def run(lab, targets, **kwargs):
    kwargs.setdefault("retry_delay", 0)
    return {(r.name, r.scope): r for r in collect_graph(targets, environ=kwargs.pop("environ", lab_environ(lab)),
                                                        **kwargs)}


def test_secret_flow_reads_every_source_of_every_tenant_with_paging_complete(fresh):
    section, environ = fresh.graph_section()  # what the demo writes: variable names only, secrets in the environment
    assert set(environ.values()) == {fresh.secret(t) for t in (CONTOSO, FABRIKAM, NORTHWIND)}
    assert not any(secret in json.dumps(section) for secret in environ.values())
    results = run(fresh, parse_graph_section(section), environ=environ)
    assert len(results) == 3 * len(SOURCES)
    contoso = {name: r for (name, scope), r in results.items() if scope == CONTOSO}
    assert {n: r.status for n, r in contoso.items()} == dict.fromkeys(SOURCES, "ok")

    sp = contoso["graph.exo_service_principal"].data
    assert sp["appId"] == "00000002-0000-0ff1-ce00-000000000000"
    assert sp["servicePrincipalNames"][0] == "https://mail.contoso.com/"
    assert sp["keyCredentials"][0]["type"] == "AsymmetricX509Cert"
    assert not any(k.startswith("@odata") for k in sp)
    users = contoso["graph.users"].data
    assert len(users) == 120 and len({u["userPrincipalName"] for u in users}) == 120
    assert set(users[0]) == {"userPrincipalName", "mail", "onPremisesSyncEnabled", "onPremisesSecurityIdentifier"}
    assert users[1] == {"userPrincipalName": "cloudonly@contoso.onmicrosoft.com", "mail": None,
                        "onPremisesSyncEnabled": None, "onPremisesSecurityIdentifier": None}
    assert contoso["graph.users"].command.endswith("(+2 @odata.nextLink pages)")
    assert "$select=userPrincipalName,mail,onPremisesSyncEnabled,onPremisesSecurityIdentifier" in \
        contoso["graph.users"].command
    org = contoso["graph.organization"].data
    assert org[0]["id"] == CONTOSO and org[0]["onPremisesSyncEnabled"] is True
    assert {d["name"] for d in org[0]["verifiedDomains"]} == {"contoso.com", "contoso.onmicrosoft.com",
                                                              "fed.contoso.com"}
    assert {d["id"]: d["authenticationType"] for d in contoso["graph.domains"].data}["fed.contoso.com"] == "Federated"
    assert contoso["graph.security_defaults"].data["isEnabled"] is False
    assert contoso["graph.conditional_access_policies"].data[0]["state"] == "enabledForReportingButNotEnforced"
    assert contoso["graph.subscribed_skus"].data[0]["skuPartNumber"] == "SPE_E5"

    # Fabrikam's app lacks Application.Read.All: that one source is ERROR and names the permission; the rest is read.
    denied = results[("graph.exo_service_principal", FABRIKAM)]
    assert denied.status == "error"
    assert "HTTP 403 Authorization_RequestDenied" in denied.error and "Application.Read.All" in denied.error
    assert results[("graph.users", FABRIKAM)].status == "ok"
    # Northwind has no Exchange Online service principal at all.
    missing = results[("graph.exo_service_principal", NORTHWIND)]
    assert missing.status == "error" and "HTTP 404" in missing.error and "does not exist" in missing.error

    # Every page kept $select, and nothing but token POSTs and Graph GETs left the collector.
    log = fresh.requests
    pages = [r for r in log if r.route == "users" and r.tenant == CONTOSO]
    assert len(pages) == 3 and all("$select=userPrincipalName" in r.raw_path for r in pages)
    assert {(r.method, r.route) for r in log if r.method != "GET"} == {("POST", "token")}
    assert sum(1 for r in log if r.route == "token") == 3  # one sign-in per tenant, shared by every query


def test_certificate_credentials_pem_and_password_protected_pfx(fresh):
    pem = target_for(fresh, CONTOSO, credential="certificate", client_secret_env=None,
                     certificate_path=str(fresh.certificate(CONTOSO, "pem")))
    pfx = target_for(fresh, FABRIKAM, credential="certificate", client_secret_env=None,
                     certificate_path=str(fresh.certificate(FABRIKAM, "pfx", password="lab-pfx-pass")),
                     certificate_password_env="LAB_PFX_PASSWORD")
    results = run(fresh, [pem, pfx], environ={"LAB_PFX_PASSWORD": "lab-pfx-pass"})
    assert results[("graph.users", CONTOSO)].status == "ok"
    assert results[("graph.domains", FABRIKAM)].status == "ok"
    tokens = [r for r in fresh.requests if r.route == "token"]
    assert [r.client_auth for r in tokens] == ["client_assertion"] * 2 and all(r.status == 200 for r in tokens)


def test_device_code_credential_signs_in_through_the_lab(fresh):
    prompts: list[str] = []
    target = target_for(fresh, CONTOSO, credential="device_code", client_secret_env=None)
    results = run(fresh, [target], environ={}, prompt=prompts.append)
    assert results[("graph.organization", CONTOSO)].status == "ok"
    assert len(prompts) == 1 and "/devicelogin" in prompts[0] and "enter the code" in prompts[0]
    assert [r.client_auth for r in fresh.requests if r.route == "token"] == ["device_code"]


def test_throttling_is_retried_and_faults_stay_on_their_source(fresh):
    fresh.inject(CONTOSO, "users", 429, times=1, retry_after=1)             # retried after Retry-After: 1
    fresh.inject(CONTOSO, "security_defaults", 429, retry_after=1)          # throttled on every attempt
    fresh.inject(CONTOSO, "domains", 500)                                   # not retried (429/503/504 only)
    results = run(fresh, [target_for(fresh, CONTOSO)], max_retries=1)
    assert results[("graph.users", CONTOSO)].status == "ok"
    assert len(results[("graph.users", CONTOSO)].data) == 120
    throttled = results[("graph.security_defaults", CONTOSO)]
    assert throttled.status == "error" and "HTTP 429 TooManyRequests" in throttled.error
    assert "throttled" in throttled.error
    failed = results[("graph.domains", CONTOSO)]
    assert failed.status == "error" and failed.error.startswith("HTTP 500")
    assert results[("graph.organization", CONTOSO)].status == "ok"
    users = [r for r in fresh.requests if r.route == "users"]
    assert [r.status for r in users[:2]] == [429, 200]
    assert users[1].headers.get("Retry-Attempt") == "1"


def test_refused_secret_is_an_error_on_every_source_and_no_secret_is_written(fresh, tmp_path):
    wrong = "Wr0ng~Secret.Value-0123456789abcdef"
    results = run(fresh, [target_for(fresh, CONTOSO), target_for(fresh, FABRIKAM)],
                  environ={**lab_environ(fresh), f"LAB_SECRET_{CONTOSO[:8]}": wrong})
    for name in SOURCES:
        refused = results[(name, CONTOSO)]
        assert refused.status == "error"
        assert refused.error.startswith(f"sign-in to tenant {CONTOSO} failed: AADSTS7000215")
        assert refused.command.startswith("GET https://127.0.0.1:")
    assert results[("graph.users", FABRIKAM)].status == "ok"

    snapshot = Snapshot.new()
    for result in results.values():
        snapshot.add(result)
    text = snapshot.save(tmp_path / "evidence.json").decode()
    assert loads_snapshot(text.encode()).sources.keys() == snapshot.sources.keys()
    for secret in (wrong, fresh.secret(CONTOSO), fresh.secret(FABRIKAM)):
        assert secret not in text
        assert secret not in repr(fresh.requests)
    assert "eyJ" not in text  # no bearer token either


def test_tls_verification_is_on_without_the_lab_ca(fresh):
    results = run(fresh, [target_for(fresh, CONTOSO, ca_bundle=None)], signin_retries=0)
    assert {r.status for r in results.values()} == {"error"}
    assert "certificate" in results[("graph.users", CONTOSO)].error.lower()
    assert not any(r.route not in (None, "discovery") for r in fresh.requests)  # no token was ever issued


def test_a_secret_missing_from_the_environment_is_a_configuration_error(fresh):
    with pytest.raises(ConfigError, match="named by client_secret_env, which is not set") as error:
        collect_graph([target_for(fresh, CONTOSO)], environ={})
    assert "LAB_SECRET" not in str(error.value)
    assert fresh.requests == []


def test_collector_and_lab_modules_import_no_graph_sdk():
    code = ("import sys, hma_check.collect.graph.collector, hma_check.collect.graph.config, hma_lab.graph_service, "
            "hma_lab.tenants; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'msgraph', 'msgraph_core', 'kiota_http', 'azure', 'httpx', 'msal', 'jwt', 'trustme', 'yaml'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []


def test_the_sdk_is_frozen_once_per_process_and_only_when_a_tenant_is_read():
    """collect_graph moves the SDK's long-lived objects out of the garbage collector's way, once (no targets: not
    at all, and nothing imported)."""
    code = ("import gc, sys; from hma_check.collect.graph import collector as c; c.collect_graph([]); "
            "print(gc.get_freeze_count(), 'msgraph' in sys.modules); c._settle_the_sdk(); n = gc.get_freeze_count(); "
            "c._settle_the_sdk(); print(n > 0 and gc.get_freeze_count() == n, 'msgraph' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "False", "True", "True"]


def test_managed_identity_credential_uses_the_app_service_endpoint(fresh, monkeypatch):
    # azure-identity reads IDENTITY_ENDPOINT/IDENTITY_HEADER from the process environment itself.
    for name, value in fresh.managed_identity_env(NORTHWIND).items():
        monkeypatch.setenv(name, value)
    target = target_for(fresh, NORTHWIND, credential="managed_identity", client_id=None, client_secret_env=None)
    results = run(fresh, [target], environ={})
    assert results[("graph.domains", NORTHWIND)].status == "ok"
    tokens = [r for r in fresh.requests if r.route == "token"]
    assert [(r.method, r.client_auth, r.status) for r in tokens] == [("GET", "identity_header", 200)]


def test_graph_down_is_an_error_per_source_that_says_where(fresh):
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    results = run(fresh, [target_for(fresh, CONTOSO, graph_url=f"https://127.0.0.1:{port}/v1.0")])
    assert {r.status for r in results.values()} == {"error"}
    assert all(f"cannot reach Graph https://127.0.0.1:{port}" in r.error for r in results.values())


def test_a_sign_in_host_that_never_answers_is_an_error_within_the_timeout(fresh):
    """The graph timeout bounds the sign-in too (azure-core's own default is 300 s per read)."""
    import socket
    import time

    with socket.socket() as silent:  # accepts TCP connections (the backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.perf_counter()
        results = run(fresh, [target_for(fresh, CONTOSO, authority=f"https://127.0.0.1:{port}", timeout=1)],
                      signin_retries=0)
        elapsed = time.perf_counter() - t0
    assert {r.status for r in results.values()} == {"error"}
    assert all(r.error.startswith(f"sign-in to tenant {CONTOSO} failed") and "timed out" in r.error
               for r in results.values())
    assert elapsed < 15
    assert fresh.requests == []


def test_a_graph_host_that_never_answers_is_an_error_per_source_within_the_timeout(fresh):
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.perf_counter()
        results = run(fresh, [target_for(fresh, CONTOSO, graph_url=f"https://127.0.0.1:{port}/v1.0", timeout=1)])
        elapsed = time.perf_counter() - t0
    assert {r.status for r in results.values()} == {"error"}
    assert all(r.error == f"cannot reach Graph https://127.0.0.1:{port}: ConnectTimeout: no answer in time"
               for r in results.values()), results[("graph.users", CONTOSO)].error
    assert elapsed < 15


def test_the_lab_grants_exactly_the_permissions_the_collector_asks_for():
    from hma_check.collect.graph.collector import REQUIRED_PERMISSIONS
    from hma_lab.graph_service import ROUTE_ROLES
    from hma_lab.tenants import DEFAULT_ROLES

    assert set(REQUIRED_PERMISSIONS) == set(DEFAULT_ROLES)
    assert all(q.permission in ROUTE_ROLES[route] for q, route in zip(QUERIES, (
        "service_principals", "service_principals", "organization", "domains", "users", "security_defaults",
        "conditional_access", "subscribed_skus"), strict=True))
    assert "Application.Read.All" in ROUTE_ROLES["applications"]   # the beta application reads of App Proxy apps


def test_default_chain_and_azure_cli_credentials_reach_the_lab(fresh, monkeypatch, tmp_path):
    # DefaultAzureCredential starts with EnvironmentCredential: the app's id and secret in AZURE_* variables.
    monkeypatch.setenv("AZURE_TENANT_ID", CONTOSO)
    monkeypatch.setenv("AZURE_CLIENT_ID", fresh.client_id(CONTOSO))
    monkeypatch.setenv("AZURE_CLIENT_SECRET", fresh.secret(CONTOSO))
    default = target_for(fresh, CONTOSO, credential="default", client_id=None, client_secret_env=None)
    results = run(fresh, [default], environ={})
    assert results[("graph.organization", CONTOSO)].status == "ok"
    assert [r.client_auth for r in fresh.requests if r.route == "token"] == ["client_secret"]

    # AzureCliCredential runs `az account get-access-token`: an az on PATH that answers as the real one does,
    # with a token the lab signed for the tenant it is asked about.
    token = fresh.issue_token(FABRIKAM)
    az = tmp_path / "az"
    az.write_text("#!/bin/sh\n"
                  f'case "$*" in *"--tenant {FABRIKAM}"*"--resource https://graph.microsoft.com"*|'
                  f'*"--resource https://graph.microsoft.com"*"--tenant {FABRIKAM}"*) ;;\n'
                  '  *) echo "ERROR: unexpected arguments: $*" >&2; exit 1;;\nesac\n'
                  f"echo '{{\"accessToken\": \"{token}\", \"expires_on\": 4102444800, \"tenant\": \"{FABRIKAM}\","
                  " \"tokenType\": \"Bearer\"}'\n")
    az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    cli = target_for(fresh, FABRIKAM, credential="azure_cli", client_id=None, client_secret_env=None)
    results = run(fresh, [cli], environ={})
    assert results[("graph.domains", FABRIKAM)].status == "ok", results[("graph.domains", FABRIKAM)].error
    denied = results[("graph.exo_service_principal", FABRIKAM)]
    assert "delegated permission Application.Read.All" in denied.error  # a person signed in, not an app


def test_a_ca_bundle_that_is_not_pem_is_an_error_per_source(fresh, tmp_path):
    bundle = tmp_path / "not-a-ca.pem"
    bundle.write_text("this is not a certificate\n")
    results = run(fresh, [target_for(fresh, CONTOSO, ca_bundle=str(bundle))])
    assert {r.status for r in results.values()} == {"error"}
    assert all(r.error.startswith(f"cannot set up the Graph client for tenant {CONTOSO}") for r in results.values())
    assert results[("graph.users", CONTOSO)].command.startswith("GET /v1.0/users")
    assert fresh.requests == []


def test_the_transport_refuses_anything_but_get(fresh):
    """Read-only in code: a PATCH built by any path (the SDK's upsert snippets included) never leaves."""
    import asyncio

    import httpx
    from kiota_abstractions.method import Method

    from hma_check.collect.graph.collector import GraphQueryError, build_client, build_credential, refuse_all_but_get

    asyncio.run(refuse_all_but_get(httpx.Request("GET", "https://graph.microsoft.com/v1.0/organization")))
    for method in ("PATCH", "POST", "DELETE", "PUT"):
        with pytest.raises(GraphQueryError, match=f"GET requests only, not {method}"):
            asyncio.run(refuse_all_but_get(httpx.Request(method, "https://graph.microsoft.com/v1.0/servicePrincipals/x")))

    # Wired where requests leave: a write sent through the collector's own client, signed in, reaches nothing.
    target = target_for(fresh, CONTOSO)

    async def write() -> None:
        client, http = build_client(target, build_credential(target, lab_environ(fresh)))
        try:
            request = QUERIES[0].build(client)
            client.request_adapter.set_base_url_for_request_information(request)
            request.http_method, request.content = Method.PATCH, b"{}"
            await client.request_adapter.send_primitive_async(request, "bytes", {})
        finally:
            await http.aclose()

    with pytest.raises(GraphQueryError, match="GET requests only, not PATCH /v1.0/servicePrincipals"):
        asyncio.run(write())
    assert [r.method for r in fresh.requests if r.route != "discovery"] == ["POST"]  # the sign-in only
    assert [r.route for r in fresh.requests if r.method == "POST"] == ["token"]


def test_the_scrubber_removes_secrets_whole_and_bearer_tokens():
    """What keeps a secret or token out of every Graph error: the lab never echoes one, so test it directly."""
    from hma_check.util.scrub import Scrubber

    scrub = Scrubber(["Secret~1", "Secret~1-and-more"])
    text = "sent Secret~1-and-more then Secret~1 with Authorization: Bearer eyJ0eXAiOiJKV1Qi.eyJ0aWQiOiJ4In0.c2ln-_x"
    assert scrub(text) == "sent *** then *** with Authorization: Bearer <token>"


def test_a_retry_after_longer_than_the_timeout_is_not_waited_for(fresh):
    """Before: Retry-After: 100 was waited out three times (kiota honours up to 180 s): one source held the scan for
    300 s, whatever the graph timeout."""
    import time
    from dataclasses import replace

    from tests.support.hostile import deadline

    fresh.inject(CONTOSO, "organization", 429, retry_after=100)
    fresh.inject(CONTOSO, "users", 429, times=1, retry_after=1)   # a wait that fits the timeout is still waited out
    started = time.monotonic()
    with deadline(60):
        results = run(fresh, [replace(target_for(fresh, CONTOSO), timeout=20)])
    assert time.monotonic() - started < 20
    throttled = results[("graph.organization", CONTOSO)]
    assert throttled.status == "error" and "HTTP 429" in throttled.error and "Retry-After: 100" in throttled.error
    assert results[("graph.users", CONTOSO)].status == "ok"
    assert [r.status for r in fresh.requests if r.route == "organization"] == [429]


@pytest.mark.parametrize("body", [
    {"@odata.context": "c", "value": [{"id": "1", "mail": None}],
     "@odata.nextLink": "https://x/v1.0/users?$skiptoken=a"},
    {"@odata.context": "c", "id": "1", "isEnabled": False},
    # a property annotation below the top level (real conditionalAccessPolicy lists carry one in grantControls)
    {"@odata.context": "c",
     "value": [{"grantControls": {"authenticationStrength@odata.context": "x", "operator": "OR"}}]},
    {"value": [{"@odata.type": "#microsoft.graph.user", "id": "1"}]},
    # the text "@odata." in a value is kept; a key spelled with escapes is still an annotation
    {"@odata.context": "c", "value": [{"displayName": "see @odata.type", "id": "2"}]},
    {"@odata.context": "c", "value": [{"\u0040odata.type": "#x", "id": "3"}], "d\u00e9j\u00e0": "vu"},
    {"@odata.context": "c", "value": [{"n": [{"x@odata.type": 1}, {"y": [2]}]}]},
])
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_the_page_shortcut_strips_annotations_as_the_walk_does(body, ensure_ascii):
    """_without_annotations skips walking the items only when nothing below the top level can be an annotation."""
    from hma_check.collect.graph.collector import _json, _strip_annotations, _without_annotations

    for raw in (json.dumps(body, ensure_ascii=ensure_ascii).encode(),
                json.dumps(body).replace("@odata", "\\u0040odata").encode()):
        parsed = _json(raw)
        assert _without_annotations(raw, parsed) == _strip_annotations(parsed)
        assert "@odata." not in json.dumps(_without_annotations(raw, parsed)).replace("see @odata.type", "")


class _Pages:
    """A request adapter that answers from canned bodies by URL and records what was asked for, in order."""

    def __init__(self, bodies: dict, fail: set | None = None) -> None:
        self.bodies, self.fail, self.asked = bodies, fail or set(), []

    async def send_primitive_async(self, request, kind, errors):
        import asyncio

        from kiota_abstractions.api_error import APIError

        self.asked.append(request.url)
        await asyncio.sleep(0)
        if request.url in self.fail:
            raise APIError("throttled", response_status_code=429)
        return json.dumps(self.bodies[request.url], separators=(",", ":")).encode()


def _read_pages(bodies: dict, fail: set | None = None):
    import asyncio
    from dataclasses import replace
    from types import SimpleNamespace

    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation

    from hma_check.collect.graph.collector import _run_query
    from hma_check.util.scrub import Scrubber

    root = "https://graph.example.test/v1.0"
    target = parse_graph_section({"tenant_id": CONTOSO, "client_id": CONTOSO, "client_secret_env": "X",
                                  "graph_url": root})[0]
    adapter = _Pages({url.replace("ROOT", root): json.loads(json.dumps(body).replace("ROOT", root))
                      for url, body in bodies.items()},
                     {url.replace("ROOT", root) for url in fail or ()})
    request = RequestInformation(Method.GET)
    request.url = f"{root}/users"
    query = replace(next(q for q in QUERIES if q.source == "graph.users"))
    result = asyncio.run(_run_query(SimpleNamespace(request_adapter=adapter), target, query, request, Scrubber([])))
    return result, [url.replace(root, "ROOT") for url in adapter.asked]


def test_pages_are_followed_in_turn_to_the_same_host_only_and_a_failed_page_is_named():
    """Every page the parsed nextLink names is read, once, in order; a nextLink to another host is refused; a page
    that fails fails the source, naming the page."""
    page = lambda i, link=None: {"@odata.context": "c", "value": [{"id": str(i)}],  # noqa: E731
                                 **({"@odata.nextLink": link} if link else {})}
    result, asked = _read_pages({"ROOT/users": page(1, "ROOT/users?p=2"), "ROOT/users?p=2": page(2, "ROOT/users?p=3"),
                                 "ROOT/users?p=3": page(3)})
    assert result.ok and [u["id"] for u in result.data] == ["1", "2", "3"]
    assert asked == ["ROOT/users", "ROOT/users?p=2", "ROOT/users?p=3"]
    assert result.command.endswith("(+2 @odata.nextLink pages)")

    result, asked = _read_pages({"ROOT/users": page(1, "https://elsewhere.example/v1.0/users?p=2")})
    assert asked == ["ROOT/users"] and "refused an @odata.nextLink to another host" in result.error

    result, asked = _read_pages({"ROOT/users": page(1, "ROOT/users?p=2")}, fail={"ROOT/users?p=2"})
    assert result.status == "error" and "HTTP 429" in result.error and result.error.endswith("(on page 2)")


def test_a_token_is_kept_while_it_has_time_left_and_a_claims_challenge_drops_it():
    """kiota asks for a token on every request: the slot answers from the token it got while more than the refresh
    margin is left, for the same scopes and options only; claims always reach the credential."""
    from azure.core.credentials import AccessToken

    from hma_check.collect.graph.collector import TOKEN_REFRESH_MARGIN, _CredentialSlot

    class Counting:
        def __init__(self, lifetime):
            self.calls, self.lifetime = [], lifetime

        def get_token(self, *scopes, **kwargs):
            self.calls.append((scopes, kwargs))
            return AccessToken(f"t{len(self.calls)}", int(time.time() + self.lifetime))

    slot = _CredentialSlot()
    slot.credential = Counting(3600)
    tokens = [slot.get_token("s/.default", claims=None, enable_cae=True).token for _ in range(5)]
    assert tokens == ["t1"] * 5 and len(slot.credential.calls) == 1
    assert slot.get_token("other/.default", claims=None, enable_cae=True).token == "t2"
    assert slot.get_token("other/.default", claims=None, enable_cae=False).token == "t3"
    assert slot.get_token("other/.default", claims="eyJ4Ijp7fX0=", enable_cae=False).token == "t4"
    assert slot.get_token("other/.default", claims=None, enable_cae=False).token == "t5"   # the challenge dropped t3
    assert len(slot.credential.calls) == 5

    slot.credential = Counting(TOKEN_REFRESH_MARGIN - 5)   # too close to its expiry to be kept
    assert [slot.get_token("s/.default").token for _ in range(3)] == ["t1", "t2", "t3"]


def test_a_collection_asks_the_credential_for_a_token_once_per_tenant_not_per_request(fresh):
    from hma_check.collect.graph.collector import build_credential

    calls = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def get_token(self, *scopes, **kwargs):
            calls.append(scopes)
            return self.inner.get_token(*scopes, **kwargs)

        def close(self):
            self.inner.close()

    results = run(fresh, [target_for(fresh, CONTOSO)],
                  credential_factory=lambda target, env: Counting(build_credential(target, env)))
    assert all(r.ok for r in results.values())
    assert results[("graph.users", CONTOSO)].command.endswith("(+2 @odata.nextLink pages)")
    assert len(calls) == 2   # the sign-in up front, then the first request; every later request reuses it
