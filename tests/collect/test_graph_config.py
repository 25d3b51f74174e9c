"""The graph: section of the scan configuration: clouds, credentials, overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hma_check.errors import ConfigError
from hma_check.collect.config import load_config_text

TID = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"
TID2 = "0b3f9a51-7e2c-4d8a-b6f4-2c9e1d7a5b30"
APP = "3c5d7e9f-1a2b-4c3d-8e9f-0a1b2c3d4e5f"


def parse(text: str, tmp_path="."):
    """Through the scan configuration loader, as `hma-check scan --config` reads it."""
    return list(load_config_text(text, source="scan.yaml", base_dir=Path(tmp_path)).sections["graph"].targets)


def error(text: str, tmp_path=".") -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, tmp_path)
    return str(info.value)


def test_single_tenant_defaults_to_the_global_cloud():
    [target] = parse(f"graph:\n  tenant_id: {TID.upper()}\n  client_id: {APP}\n  client_secret_env: HMA_SECRET\n")
    assert target.tenant_id == TID and target.credential == "client_secret"
    assert target.authority_url == "https://login.microsoftonline.com"
    assert target.graph_root == "https://graph.microsoft.com/v1.0"
    assert target.scope == "https://graph.microsoft.com/.default"
    assert not target.custom_authority


@pytest.mark.parametrize(("cloud", "authority", "graph"), [
    ("usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us"),
    ("usgov-dod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    ("china", "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
])
def test_national_clouds_pick_the_sign_in_host_graph_host_and_token_resource(cloud, authority, graph):
    [target] = parse(f"graph: {{tenant_id: {TID}, credential: azure_cli, cloud: {cloud}}}\n")
    assert (target.authority_url, target.graph_root, target.scope) == (authority, f"{graph}/v1.0",
                                                                       f"{graph}/.default")
    assert not target.custom_authority


def test_several_tenants_share_defaults_and_overrides_keep_the_cloud_resource(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "app.pfx").write_bytes(b"x")
    targets = parse(f"""graph:
  credential: certificate
  client_id: {APP}
  certificate_path: app.pfx
  authority: https://127.0.0.1:8443/
  graph_url: https://127.0.0.1:8443
  ca_bundle: ca.pem
  tenants:
    - tenant_id: {TID}
    - {{tenant_id: {TID2}, credential: client_secret, client_secret_env: SECOND_SECRET}}
""", tmp_path)
    assert [t.tenant_id for t in targets] == [TID, TID2]
    assert targets[0].certificate_path == tmp_path / "app.pfx" and targets[1].credential == "client_secret"
    assert targets[0].graph_root == "https://127.0.0.1:8443/v1.0"
    assert targets[0].authority_url == "https://127.0.0.1:8443" and targets[0].custom_authority
    assert targets[0].scope == "https://graph.microsoft.com/.default"


@pytest.mark.parametrize(("body", "expected"), [
    ("graph: {tenant_id: contoso}", "scan.yaml:1: graph.tenant_id: must be the tenant id (a GUID)"),
    (f"graph: {{tenant_id: {TID}, client_secret: s3cr3t}}", "scan.yaml:1: graph.client_secret: secrets are never written"),
    (f"graph: {{tenant_id: {TID}, credential: password}}", "graph.credential: must be one of client_secret"),
    (f"graph: {{tenant_id: {TID}}}", "graph.client_id: credential client_secret needs the app registration's"),
    (f"graph: {{tenant_id: {TID}, client_id: {APP}}}", "graph.client_secret_env: credential client_secret needs"),
    (f"graph: {{tenant_id: {TID}, client_id: {APP}, client_secret_env: 'a b'}}", "must be the name of an environ"),
    (f"graph: {{tenant_id: {TID}, credential: certificate, client_id: {APP}, certificate_path: nope.pem}}",
     "graph.certificate_path: no such file"),
    (f"graph: {{tenant_id: {TID}, credential: default, cloud: germany}}", "graph.cloud: must be one of global"),
    (f"graph: {{tenant_id: {TID}, credential: default, authority: 'http://login'}}", "must be an https:// URL"),
    (f"graph: {{tenant_id: {TID}, credential: default, authority: 'https://login/{TID}'}}", "sign-in host only"),
    (f"graph: {{tenant_id: {TID}, credential: default, graph_url: 'https://g/beta'}}", "must end in /v1.0"),
    (f"graph: {{tenant_id: {TID}, credential: default, timeout: 0}}", "graph.timeout: must be a number"),
    (f"graph: {{tenant_id: {TID}, credential: default, tenat: x}}", "graph.tenat: unknown key"),
    ("graph:\n  credential: default\n  tenants:\n    - {tenant_id: " + TID + "}\n    - {tenant_id: " + TID + "}\n",
     "scan.yaml:5: graph.tenants[1].tenant_id: tenant " + TID + " is listed twice"),
    ("graph:\n  tenant_id: " + TID + "\n  tenants: []\n", "not both"),
    ("graph:\n  credential: default\n  tenants: []\n", "graph.tenants: must be a non-empty list"),
])
def test_bad_graph_sections_get_one_line_naming_file_line_and_key(body, expected, tmp_path):
    message = error(body + "\n", tmp_path)
    assert expected in message and message.startswith("scan.yaml:") and "\n" not in message
    assert "s3cr3t" not in message
