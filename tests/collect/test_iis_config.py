"""Require SSL of the HMA paths, read from applicationHost.config the way IIS resolves it."""

from __future__ import annotations

import pytest

from hma_check.collect.iis_config import ApplicationHostError, hma_ssl_flags


def config(body: str, server: str = "") -> str:
    root = f"<system.webServer><security><access sslFlags=\"{server}\" /></security></system.webServer>" if server else ""
    return f'<?xml version="1.0" encoding="UTF-8"?>\r\n<configuration>{root}{body}</configuration>\r\n'


def location(path: str, flags: str) -> str:
    return (f'<location path="{path}" overrideMode="Allow"><system.webServer><security><access sslFlags="{flags}" />'
            "</security></system.webServer></location>")


def test_a_path_inherits_the_site_then_the_server_then_the_iis_default():
    flags = hma_ssl_flags(config(location("Default Web Site/MAPI", "Ssl, Ssl128")
                                 + location("Default Web Site", "Ssl"), server="None"))
    assert flags["/mapi"] == {"sslFlags": "Ssl, Ssl128", "RequireSsl": True, "Location": "Default Web Site/MAPI"}
    assert flags["/EWS"] == {"sslFlags": "Ssl", "RequireSsl": True, "Location": "Default Web Site"}
    bare = hma_ssl_flags(config(""))
    assert bare["/OAB"] == {"sslFlags": "None", "RequireSsl": False, "Location": None}


def test_negotiating_a_client_certificate_is_not_requiring_ssl():
    flags = hma_ssl_flags(config(location("Default Web Site/EWS", "SslNegotiateCert")))
    assert flags["/EWS"]["RequireSsl"] is False


@pytest.mark.parametrize("text,message", [
    ('<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "b">]><configuration>&a;</configuration>', "DTD"),
    ("<configuration><location>", "not well-formed"),
    ("<settings/>", "not an IIS applicationHost.config"),
])
def test_anything_but_an_iis_configuration_is_refused(text, message):
    with pytest.raises(ApplicationHostError, match=message):
        hma_ssl_flags(text)
