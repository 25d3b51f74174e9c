"""The lab's endpoints follow the scenario (and its endpoints: section); a scan through the runner probes them."""

from __future__ import annotations

import ssl
import textwrap

import httpx
import pytest

from hma_check.collect.runner import run_collectors
from hma_check.collect.config import load_config_text
from hma_check.errors import InputError
from hma_lab.commands import scan_config_text
from hma_lab.endpoint_server import EndpointServer
from hma_lab.endpoints import BALANCER_ADDRESS
from hma_lab.runtime import Lab
from hma_lab.scenario import load_scenario_file
from hma_check.commands.pipeline import run_report
from tests.support.probe_lab import lab_spec

TENANT = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"
# The ready organisation plus what only the network shows: IIS on EX02 lost OAuth on EWS while the cmdlets still
# say OAuth, autodiscover is published through a pre-authenticating proxy, a legacy name answers TLS 1.0 only,
# another serves an expired certificate; and EX02's MAPI directory has no OAuth in IIS (seen by both sides).
SCENARIO = """\
    extends: ready
    name: outside-in-test
    servers:
      - name: EX01
      - name: EX02
        virtual_directories:
          mapi:
            IISAuthenticationMethods: [Ntlm, Negotiate]
    endpoints:
      nodes:
        - name: EX02
          oauth: {EWS: false}
      hosts:
        - name: autodiscover.contoso.com
          front: preauth
        - name: legacy.contoso.com
          nodes: [EX01]
          tls_versions: [TLSv1.0]
        - name: old.contoso.com
          nodes: [EX02]
          certificate: {validity: expired}
"""


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scenario") / "outside-in.yaml"
    path.write_text(textwrap.dedent(SCENARIO))
    return path


@pytest.fixture(scope="module")
def ready_lab():
    with Lab("ready") as lab:
        yield lab


def _service(lab: Lab):
    return next(service for service in lab.services if hasattr(service, "server"))


def test_ready_endpoints_follow_the_exchange_configuration(ready_lab):
    spec = _service(ready_lab).server.spec
    assert spec.tenant_ids == (TENANT,)  # the auth servers' Realm
    assert spec.evosts_default is False and spec.oauth2_client_profile_enabled is False
    assert [(n.name, n.address) for n in spec.nodes] == [("EX01", "127.0.1.1"), ("EX02", "127.0.1.2")]
    ex01 = spec.node("EX01")
    assert ex01.tls_versions == ("TLSv1.2", "TLSv1.3")  # 1.0/1.1 off in the registry; 1.3 is Windows 2022's default
    assert ex01.certificate.names == ("mail.contoso.com", "autodiscover.contoso.com")
    assert ex01.certificate.issuer == "lab" and ex01.ssl_offloading is False
    assert all(vdir.oauth for name, vdir in ex01.virtual_directories.items() if name != "RPC")
    # Outlook Anywhere (/rpc) answers with its IIS schemes and never OAuth: RPC over HTTP cannot carry a token.
    assert ex01.virtual_directories["RPC"].oauth is False
    assert ex01.virtual_directories["RPC"].challenges == ("Negotiate", "NTLM", "Basic")
    assert ex01.virtual_directories["MAPI"].challenges == ("Negotiate", "NTLM")
    assert ex01.autodiscover_urls["ActiveSync"] == "https://mail.contoso.com/Microsoft-Server-ActiveSync"
    assert {(h.name, h.nodes) for h in spec.hosts} == {("mail.contoso.com", ("EX01", "EX02")),
                                                       ("autodiscover.contoso.com", ("EX01", "EX02"))}
    probes = ready_lab.scan_config()["probes"]
    assert probes["hosts"] == [] and len(probes["connect_to"]) == 4


def test_a_scan_of_the_lab_probes_every_node_and_the_checks_see_it(scenario_file, tmp_path):
    with Lab(scenario_file) as lab:
        config = load_config_text(scan_config_text(lab))
        snapshot = run_collectors(config, secrets=lab.secrets())
        requests = list(_service(lab).server.requests)
        port = _service(lab).server.port
    assert snapshot.sources["probe.targets"].data["unknown"] == []
    snapshot.save(tmp_path / "evidence.json")
    findings = run_report(tmp_path / "evidence.json", tmp_path / "report").report.findings
    status = {(f.check_id, f.subject): f.status for f in findings if f.check_id.startswith("HMA-PROBE")}
    ex01, ex02 = " via 127.0.1.1", " via 127.0.1.2"   # the lab's port changes every run: never in a subject
    assert not any(str(port) in f.subject for f in findings)
    assert status["HMA-PROBE-001", f"https://mail.contoso.com/EWS/Exchange.asmx{ex02}"] == "FAIL"  # endpoints:
    assert status["HMA-PROBE-001", f"https://mail.contoso.com/EWS/Exchange.asmx{ex01}"] == "PASS"
    assert status["HMA-PROBE-001", f"https://mail.contoso.com/mapi/{ex02}"] == "FAIL"  # the scenario's IIS
    assert status["HMA-PROBE-002", f"https://autodiscover.contoso.com/mapi/{ex02}"] == "FAIL"
    assert status["HMA-PROBE-020", "legacy.contoso.com:443"] == "FAIL"
    assert status["HMA-PROBE-022", "old.contoso.com:443"] == "FAIL"
    assert status["HMA-PROBE-004", f"https://mail.contoso.com/OAB/{ex01}"] == "PASS"  # no authorization_uri yet
    assert status["HMA-PROBE-005", f"https://mail.contoso.com/OAB/{ex01}"] == "PASS"
    assert {r["method"] for r in requests} == {"GET"}


@pytest.mark.parametrize("name", ["preauth-proxy", "iis-oauth-drift", "outside-in-tls"])
def test_outside_in_scenarios_reach_their_expected_verdict(name, tmp_path):
    """The shipped scenarios whose problems only the network shows: scanned through the runner as the demo does."""
    with Lab(name) as lab:
        snapshot = run_collectors(load_config_text(scan_config_text(lab)), secrets=lab.secrets())
        expect = lab.scenario.expect
    snapshot.save(tmp_path / "evidence.json")
    outcome = run_report(tmp_path / "evidence.json", tmp_path / "report")
    assert outcome.verdict == expect["verdict"]
    for check_id, status in expect["findings"].items():
        assert status in {f.status for f in outcome.report.findings if f.check_id == check_id}, check_id


def test_section_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("extends: ready\nname: bad\nendpoints:\n  hosts:\n    - name: x.contoso.com\n"
                    "      nodes: [EX09]\n")
    with pytest.raises(InputError) as caught:
        load_scenario_file(path)
    assert str(caught.value).startswith(f"{path}:6")
    assert "unknown node 'EX09' (known: EX01, EX02)" in str(caught.value)


def test_a_large_pool_is_reached_through_the_load_balancer():
    with EndpointServer(lab_spec(), per_node_limit=1) as server:
        assert f"mail.contoso.com:443:{BALANCER_ADDRESS}:{server.port}" in server.connect_to
        assert f"ex01.contoso.com:443:127.0.1.1:{server.port}" in server.connect_to
        context = ssl.create_default_context(cafile=str(server.ca_bundle))
        answered = []
        for _ in range(3):  # a new connection each time: the balancer hands them round-robin to the nodes
            with httpx.Client(verify=context, trust_env=False) as client:
                response = client.get(f"https://{BALANCER_ADDRESS}:{server.port}/mapi/",
                                      headers={"Host": "mail.contoso.com", "Authorization": "Bearer"},
                                      extensions={"sni_hostname": "mail.contoso.com"})
            answered.append(response.headers["x-feserver"])
    assert answered == ["EX01", "EX02", "EX01"]


def test_scan_command_line_resolve_and_connect_to(tmp_path):
    """hma-check scan --resolve/--connect-to: per-node probing from the command line, curl's syntax."""
    from click.testing import CliRunner

    from hma_check.cli import cli
    from hma_check.contract.snapshot import load_snapshot

    with EndpointServer(lab_spec()) as server:
        config = tmp_path / "scan.yaml"
        config.write_text(f"probes:\n  hosts: [mail.contoso.com]\n  ca_bundle: {server.ca_bundle}\n  timeout: 2\n"
                          "  autodiscover_email: alice@contoso.com\n")
        result = CliRunner().invoke(cli, [
            "scan", "--config", str(config), "--out", str(tmp_path / "out"),
            "--connect-to", f"mail.contoso.com:443:mail.contoso.com:{server.port}",
            "--resolve", f"mail.contoso.com:{server.port}:127.0.1.1,127.0.1.2"])
    assert result.exit_code == 1, result.output  # NOT_READY: EX02 answers EWS without the Bearer challenge
    bearer = [r for r in load_snapshot(tmp_path / "out" / "evidence.json").results("probe.bearer")]
    assert len(bearer) == 10 and all(r.ok for r in bearer)
    assert {r.data["x_feserver"] for r in bearer} == {"EX01", "EX02"}


def test_scan_command_line_refuses_a_bad_resolve(tmp_path):
    from click.testing import CliRunner

    from hma_check.cli import cli

    config = tmp_path / "scan.yaml"
    config.write_text("probes:\n  hosts: [mail.contoso.com]\n")
    result = CliRunner().invoke(cli, ["scan", "--config", str(config), "--out", str(tmp_path / "out"),
                                      "--resolve", "mail.contoso.com:443"])
    assert result.exit_code == 2
    assert "--resolve: must be HOST:PORT:ADDRESS" in result.output   # the value is not echoed (it may be a secret)
    assert not (tmp_path / "out").exists()
