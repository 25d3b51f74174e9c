"""The scan configuration: the exchange section's validation, secrets kept out, sections of other owners."""

from __future__ import annotations

import textwrap

import pytest

from hma_check.collect.exchange.config import require_auth_support
from hma_check.collect.runner import exchange_password, RunContext
from hma_check.collect.config import load_config, load_config_text
from hma_check.errors import ConfigError
from hma_check.contract.snapshot import Snapshot


def load(text: str, tmp_path=None):
    return load_config_text(textwrap.dedent(text), source="scan.yaml", base_dir=tmp_path)


def test_defaults_are_safe():
    settings = load("exchange: {server: mail.contoso.com, username: 'CONTOSO\\reader'}").sections["exchange"]
    assert (settings.ssl, settings.port, settings.cert_validation, settings.auth) == (True, 443, True, "negotiate")
    assert settings.url == "https://mail.contoso.com:443/PowerShell"
    assert settings.password_env == "HMA_CHECK_EXCHANGE_PASSWORD"
    assert settings.summary() == {"url": settings.url, "auth": "negotiate", "username": "CONTOSO\\reader",
                                  "cert_validation": True, "ca_file": None}


@pytest.mark.parametrize(("text", "line", "message"), [
    ("exchange:\n  server: mail.contoso.com\n  password: hunter2\n", 3, "secrets never go in the configuration"),
    ("exchange:\n  server: mail.contoso.com\n  auth: basic\n  ssl: false\n  username: u\n", 3,
     "allowed over TLS only"),
    ("exchange:\n  server: https://mail.contoso.com/PowerShell\n", 2, "no scheme, no path"),
    ("exchange:\n  server: mail\n  port: 70000\n", 3, "integer from 1 to 65535"),
    ("exchange:\n  server: mail\n  auth: digest\n", 3, "must be one of: kerberos"),
    ("exchange:\n  server: mail\n  ca_file: missing.pem\n", 3, "no such file"),
    ("exchange:\n  server: mail\n  auth: certificate\n", 3, "needs certificate_pem"),
    ("exchange:\n  server: mail\n  password_env: 'not a name'\n", 3, "name of an environment variable"),
    ("exchange:\n  server: mail\n  concurrency: 0\n", 3, "integer from 1 to 64"),
    ("exchange:\n  server: mail\n  colour: blue\n", 3, "unknown key"),
    ("exchange:\n  server: mail\nsmtp: {}\n", 3, "unknown section"),
    ("[]\n", 1, "a scan configuration is a mapping"),
])
def test_configuration_errors_name_file_and_line(tmp_path, text, line, message):
    with pytest.raises(ConfigError) as caught:
        load(text, tmp_path)
    assert f"scan.yaml:{line}:" in str(caught.value) and message in str(caught.value), str(caught.value)


def test_relative_files_resolve_next_to_the_configuration(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    config_file = tmp_path / "scan.yaml"
    config_file.write_text("exchange: {server: mail.contoso.com, ca_file: ca.pem, username: u, auth: ntlm}\n")
    assert load_config(config_file).sections["exchange"].ca_file == tmp_path / "ca.pem"


def test_the_password_comes_from_the_environment_or_a_prompt_never_the_file():
    settings = load("exchange: {server: mail, username: u, auth: ntlm, password_env: MY_PW}").sections["exchange"]
    context = RunContext(snapshot=Snapshot.new(), environ={"MY_PW": "from-env"})
    assert exchange_password(settings, context) == "from-env"
    asked = []
    context = RunContext(snapshot=Snapshot.new(), environ={}, prompt=lambda text: asked.append(text) or "typed")
    assert exchange_password(settings, context) == "typed" and "u on mail" in asked[0]
    with pytest.raises(ConfigError, match="set the environment variable MY_PW"):
        exchange_password(settings, RunContext(snapshot=Snapshot.new(), environ={}))


def test_kerberos_without_gssapi_is_one_clear_line(monkeypatch):
    settings = load("exchange: {server: mail, auth: kerberos}").sections["exchange"]
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError) as caught:
        require_auth_support(settings)
    assert "pip install 'hma-check[kerberos]'" in str(caught.value) and "\n" not in str(caught.value)
