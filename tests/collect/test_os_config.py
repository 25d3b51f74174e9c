"""The os: and options: sections of the scan configuration, and the exchange: section they share code with."""

from __future__ import annotations

import pytest

from hma_check.collect.config import load_config_text
from hma_check.errors import ConfigError


def test_an_empty_os_section_is_winrms_default():
    os = load_config_text("exchange: {server: ex01.contoso.com}\nos:\n").sections["os"]
    assert (os.port, os.ssl, os.path, os.auth, os.password_env) == (5985, False, "wsman", "negotiate",
                                                                     "HMA_CHECK_OS_PASSWORD")
    assert os.for_server("EX01", "ex01.contoso.com").server == "ex01.contoso.com"
    assert os.for_server("EX01", None).server == "EX01"


def test_https_and_host_overrides():
    os = load_config_text("os:\n  ssl: true\n  hosts: {EX01: 10.0.0.5, ex02: 'winrm.contoso.com:15986'}\n"
                          ).sections["os"]
    assert os.port == 5986
    first, second = os.for_server("ex01", "ex01.contoso.com"), os.for_server("EX02", "ex02.contoso.com")
    assert (first.server, first.port) == ("10.0.0.5", 5986)
    assert (second.server, second.port) == ("winrm.contoso.com", 15986)
    assert os.summary()["hosts"] == {"ex01": "10.0.0.5", "ex02": "winrm.contoso.com:15986"}


@pytest.mark.parametrize("text,where,message", [
    ("os:\n  password: hunter2\n", "os.password", "secrets never go in the configuration file"),
    ("os:\n  server: ex01\n", "os.server", "unknown key"),
    ("os:\n  auth: basic\n", "os.auth", "allowed over TLS only"),
    ("os:\n  hosts: {EX01: 'http://ex01'}\n", "os.hosts.EX01", "host name or address"),
    ("os:\n  hosts: {EX01: 'ex01:70000'}\n", "os.hosts.EX01", "host name or address"),
    ("os:\n  hosts: [ex01]\n", "os.hosts", "must map Exchange server names"),
    ("os:\n  concurrency: 0\n", "os.concurrency", "integer from 1 to 64"),
    ("os: [5985]\n", "os", "must be a mapping"),
    ("options: {owa_ecp: 'yes'}\n", "options.owa_ecp", "true or false"),
    ("options: {owa: true}\n", "options.owa", "unknown option"),
    ("exchange: {server: ex01, ssl: false, auth: basic, username: u}\n", "exchange.auth", "allowed over TLS only"),
])
def test_bad_sections_name_the_file_line_and_key(text, where, message):
    with pytest.raises(ConfigError) as raised:
        load_config_text(text, source="scan.yaml")
    line = str(raised.value)
    assert line.startswith("scan.yaml:") and where in line and message in line and "\n" not in line
    assert "hunter2" not in line


def test_options_default_to_no_optional_area():
    assert load_config_text("options:\n").sections["options"].owa_ecp is False
    assert load_config_text("options: {owa_ecp: true}").sections["options"].owa_ecp is True
