"""Scenario files: every shipped one loads, validation errors name file and line, variants, hostile values."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hma_lab import scenario as scenario_module
from hma_lab.certs import CertificateStore
from hma_lab.runtime import Lab
from hma_lab.scenario import ScenarioError, load_scenario, load_scenario_file, scenario_names
from hma_check.commands.pipeline import run_report
from tests.support.lab import scan, variant

SHIPPED = ("ready", "enabled", "exchange2010", "missing-spn", "one-server-mapi-no-oauth", "no-evosts", "ssl-offload",
           "tls-legacy", "expired-auth-cert", "hybrid-agent", "mixed-versions", "large")


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ScenarioError) as caught:
        load_scenario_file(write(tmp_path, text))
    return str(caught.value)


MINIMAL = """\
name: tiny
organization: {name: Fabrikam, ad_domain: fabrikam.local}
servers:
  - name: FAB01
"""


def test_every_issue_scenario_ships_and_states_its_verdict():
    assert set(SHIPPED) <= set(scenario_names())
    for name in scenario_names():
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.expect["verdict"] in ("READY", "NOT_READY", "INCOMPLETE")
        assert scenario.expect["findings"], f"{name} names no key finding"
    assert len(load_scenario("large").servers) == 200
    assert len(load_scenario("one-server-mapi-no-oauth").servers) == 10


def test_a_minimal_scenario_gets_exchange_defaults(tmp_path):
    scenario = load_scenario_file(write(tmp_path, MINIMAL))
    server = scenario.servers[0]
    assert (server.fqdn, server.version_text) == ("fab01.fabrikam.local", "Version 15.2 (Build 1544.4)")
    assert scenario.organization["namespace"] == "mail.fabrikam.local"
    assert scenario.username == "FABRIKAM\\hma-reader"


@pytest.mark.parametrize(("text", "line", "message"), [
    (MINIMAL + "colour: blue\n", 5, "colour: unknown key"),
    (MINIMAL.replace("  - name: FAB01", "  - name: FAB01\n    build: 15.2"), 5, "must be a build number"),
    (MINIMAL + "  - name: fab01\n", 3, "duplicate server name fab01"),
    (MINIMAL.replace("- name: FAB01", "- name: 'FAB<01>'"), 4, "is not a server name"),
    (MINIMAL + "auth_servers:\n  - {Name: EvoSts, Enabeld: true}\n", 6, "not a property of AuthServer"),
    (MINIMAL + "auth_servers:\n  - {Name: EvoSts, enabled: true}\n", 6, "did you mean Enabled?"),
    (MINIMAL + "auth_servers:\n  - {Name: EvoSts, Enabled: 'yes'}\n", 6, "must be true or false"),
    (MINIMAL + "latency: {default: fast}\n", 5, "must be a duration"),
    (MINIMAL + "certificates:\n  auth: {subject: CN=x, not_after: soon}\n", 6, "offset from now"),
    (MINIMAL + "certificates:\n  auth: {subject: CN=x, not_after: +999999y}\n", 6, "offset from now"),
    (MINIMAL + "auth_config: {current_certificate: missing}\n", 5, "no certificate 'missing'"),
    (MINIMAL + "faults:\n  - {server: FAB09, hang: true}\n", 6, "no server named 'FAB09'"),
    (MINIMAL + "faults:\n  - {hang: true, delay: 1s}\n", 6, "exactly one effect"),
    (MINIMAL + "expect: {verdict: MAYBE}\n", 5, "must be one of: READY"),
    (MINIMAL.replace("FAB01", "FAB{n}") + "    count: 3000\n", 5, "integer from 1 to 2000"),
    (MINIMAL + "  - name: FAB02\n    count: 2\n", 5, "needs {n} in its name"),
    (MINIMAL + "organization: {name: x, ad_domain: y}\n", 5, "duplicate key 'organization'"),
    (MINIMAL + "x: &a [1]\ny: *a\n", 6, "aliases"),
    (MINIMAL + "captures:\n  Get-PartnerApplication: missing.xml\n", 6, "cannot read"),
    (MINIMAL + "captures:\n  Set-AuthServer: x.xml\n", 6, "captures replay Get- cmdlets"),
    (MINIMAL.replace("Fabrikam", '"Fab\\x07rikam"'), 2, "control characters"),
])
def test_validation_errors_name_the_file_and_line(tmp_path, text, line, message):
    text_of = error_of(tmp_path, text)
    assert f"s.yaml:{line}:" in text_of and message in text_of, text_of
    assert "\n" not in text_of


def test_count_and_templates_expand_servers_and_urls(tmp_path):
    scenario = load_scenario_file(write(tmp_path, MINIMAL.replace("  - name: FAB01", """\
  - name: FAB{n:03}
    count: 3
    start: 9
    virtual_directories:
      ews: {InternalUrl: "https://{name}.{domain}/EWS/Exchange.asmx", ExternalUrl: "https://{namespace}/ews"}""")))
    assert [s.name for s in scenario.servers] == ["FAB009", "FAB010", "FAB011"]
    assert scenario.servers[1].virtual_directories["ews"]["InternalUrl"] == \
        "https://FAB010.fabrikam.local/EWS/Exchange.asmx"
    assert scenario.servers[1].virtual_directories["ews"]["ExternalUrl"] == "https://mail.fabrikam.local/ews"


def test_extends_inherits_everything_but_the_expectations(tmp_path):
    child = load_scenario_file(write(tmp_path, """\
        extends: ready
        name: child
        organization: {config: {OAuth2ClientProfileEnabled: true}}
        """))
    ready = load_scenario("ready")
    assert child.organization["config"]["OAuth2ClientProfileEnabled"] is True
    assert child.organization["config"]["MapiHttpEnabled"] is True            # merged, not replaced
    assert [s.name for s in child.servers] == [s.name for s in ready.servers]
    assert child.expect["findings"] == {} and ready.expect["findings"]


def test_an_error_in_an_inherited_value_names_the_base_file(tmp_path):
    write(tmp_path, MINIMAL + "latency: {default: 3 weeks}\n", "base.yaml")
    message = error_of(tmp_path, "extends: base.yaml\nname: child\n")
    assert "base.yaml:5:" in message and "latency.default" in message


def test_extends_refuses_loops_and_missing_bases(tmp_path):
    write(tmp_path, "extends: b.yaml\nname: a\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\nname: b\n", "b.yaml")
    with pytest.raises(ScenarioError, match="loop"):
        load_scenario_file(tmp_path / "a.yaml")
    assert "no shipped scenario or file 'nowhere.yaml'" in error_of(tmp_path, "extends: nowhere.yaml\nname: x\n")


def test_unknown_shipped_scenario_lists_the_known_ones():
    with pytest.raises(ScenarioError, match="one-server-mapi-no-oauth"):
        load_scenario("../../etc/passwd")


def test_sections_of_other_owners_go_to_their_loader(tmp_path, monkeypatch):
    seen = {}

    class Loader:
        @staticmethod
        def load_section(raw, context):
            seen["raw"], seen["servers"] = raw, len(context.scenario.servers)
            if raw == "bad":
                raise context.error((0, "id"), "not a tenant id")
            return ["parsed"]

    import sys
    monkeypatch.setitem(sys.modules, "hma_lab.test_section", Loader)
    monkeypatch.setitem(scenario_module.SECTION_MODULES, "tenants", "hma_lab.test_section")
    scenario = load_scenario_file(write(tmp_path, MINIMAL + "tenants: [{id: x}]\n"))
    assert scenario.sections["tenants"] == ["parsed"] and seen == {"raw": [{"id": "x"}], "servers": 1}
    message = error_of(tmp_path, MINIMAL + "tenants: bad\n")
    assert "s.yaml:5: tenants[0].id: not a tenant id" in message


def test_certificates_are_generated_from_the_scenario(tmp_path):
    scenario = load_scenario("expired-auth-cert")
    store = CertificateStore(scenario.certificates)
    auth = store.get("auth")
    assert auth.not_after < datetime.now(timezone.utc) - timedelta(days=9)
    by_name = {server.name: server for server in scenario.servers}
    ex01, ex02 = by_name["EX01"], by_name["EX02"]
    assert by_name["EDGE01"].is_edge                                   # ready's Edge server comes along
    assert store.get("self", ex01).subject == "CN=EX01" and store.get("self", ex02).subject == "CN=EX02"
    assert store.get("auth", ex01) is store.get("auth", ex02)           # one Auth certificate on every server
    assert len(auth.thumbprint) == 40 and auth.thumbprint == auth.thumbprint.upper()


HOSTILE = """\
extends: ready
name: hostile
organization:
  name: "Contoso <script>alert('org')</script>"
  config: {DefaultAuthenticationPolicy: "Block'; Remove-Mailbox -Identity * -Confirm:$false; '"}
server_defaults:
  virtual_directories:
    mapi:
      IISAuthenticationMethods: [Ntlm, "Negotiate<img src=x onerror=alert(1)>"]
      InternalUrl: "https://mail.contoso.com/mapi\\"><script>alert(2)</script>"
"""


def test_hostile_values_travel_verbatim_and_come_out_escaped(tmp_path):
    with Lab(variant(tmp_path, HOSTILE)) as lab:
        snapshot = scan(lab)
    mapi = snapshot.sources["exchange.mapi_virtual_directories@EX01"].data[0]
    assert mapi["IISAuthenticationMethods"][1] == "Negotiate<img src=x onerror=alert(1)>"
    assert snapshot.sources["exchange.organization_config"].data["Name"].startswith("Contoso <script>")
    evidence = tmp_path / "evidence.json"
    snapshot.save(evidence)
    run_report(evidence, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(" not in html and "<img src=x" not in html
    assert json.loads(evidence.read_text(encoding="utf-8"))["sources"]["exchange.organization_config"]["data"][
        "DefaultAuthenticationPolicy"].startswith("Block'; Remove-Mailbox")


def test_real_captures_replay_as_live_objects(tmp_path):
    from hma_check.collect.clixml import parse_clixml
    from hma_check.collect.exchange.objects import shape
    from tests.support.offline_fixtures import e19_dir

    capture = e19_dir() / "Exchange" / "GetPartnerApplication.xml"
    with Lab(variant(tmp_path, f"extends: ready\nname: replay\ncaptures:\n  Get-PartnerApplication: {capture}\n")) as lab:
        snapshot = scan(lab)
    offline = shape("exchange.partner_applications", parse_clixml(capture.read_bytes(), source=str(capture)))
    live = snapshot.sources["exchange.partner_applications"].data
    assert len(live) == 5 and live == offline        # one normaliser: live and offline give identical evidence
    assert {app["Name"] for app in live} >= {"Exchange Online", "Microsoft Graph"}
