"""A small lab for the probe tests: an explicit endpoint spec and the Exchange sources a scan of it would hold."""

from __future__ import annotations

from hma_lab.endpoints import (PROTOCOLS, CertificateSpec, EndpointsSpec, HostSpec, NodeSpec, PreauthSpec,
                                     VirtualDirectorySpec)
from hma_check.contract.snapshot import Snapshot, SourceResult

TENANT = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"
PATHS = {"MAPI": "/mapi", "EWS": "/EWS/Exchange.asmx", "OAB": "/OAB", "Autodiscover": "/Autodiscover/Autodiscover.xml",
         "ActiveSync": "/Microsoft-Server-ActiveSync"}
VDIR_SOURCES = {"MAPI": "exchange.mapi_virtual_directories", "EWS": "exchange.web_services_virtual_directories",
                "OAB": "exchange.oab_virtual_directories", "Autodiscover": "exchange.autodiscover_virtual_directories",
                "ActiveSync": "exchange.activesync_virtual_directories"}
AUTODISCOVER_URLS = {"ActiveSync": "https://mail.contoso.com/Microsoft-Server-ActiveSync",
                     "EWS": "https://mail.contoso.com/EWS/Exchange.asmx"}
# Hosts the user names in probes.hosts: each shows one failure the probes must report.
EXTRA_HOSTS = ("legacy.contoso.com", "old.contoso.com", "webmail.contoso.com", "silent.contoso.com",
               "extra.contoso.com", "untrusted.contoso.com", "modern.contoso.com")


def lab_spec(*, evosts_default: bool = True, oauth2_client_profile_enabled: bool = True) -> EndpointsSpec:
    """EX01 and EX02 behind mail/autodiscover.contoso.com; EX02 has OAuth off on EWS and Basic on."""
    ews_off = {protocol: VirtualDirectorySpec(oauth=protocol != "EWS", challenges=("Negotiate", "NTLM", "Basic"))
               for protocol in PROTOCOLS}
    nodes = (
        NodeSpec("EX01", "127.0.1.1", autodiscover_urls=AUTODISCOVER_URLS),
        NodeSpec("EX02", "127.0.1.2", virtual_directories=ews_off, autodiscover_urls=AUTODISCOVER_URLS),
    )
    hosts = (
        HostSpec("mail.contoso.com", ("EX01", "EX02")),
        HostSpec("autodiscover.contoso.com", ("EX01", "EX02")),
        HostSpec("ex01.contoso.com", ("EX01",)),
        HostSpec("ex02.contoso.com", ("EX02",)),
        HostSpec("legacy.contoso.com", ("EX01",), tls_versions=("TLSv1.0",)),
        HostSpec("old.contoso.com", ("EX01",), certificate=CertificateSpec(("old.contoso.com",), validity="expired")),
        HostSpec("webmail.contoso.com", ("EX02",), front="preauth", preauth=PreauthSpec(302)),
        HostSpec("silent.contoso.com", ("EX02",), front="silent"),
        HostSpec("extra.contoso.com", ("EX01",), certificate=CertificateSpec(("mail.contoso.com", "*.mail.contoso.com"))),
        HostSpec("untrusted.contoso.com", ("EX02",),
                 certificate=CertificateSpec(("untrusted.contoso.com",), issuer="untrusted")),
        HostSpec("modern.contoso.com", ("EX01",), tls_versions=("TLSv1.2", "TLSv1.3")),
    )
    return EndpointsSpec(tenant_ids=(TENANT,), evosts_default=evosts_default,
                         oauth2_client_profile_enabled=oauth2_client_profile_enabled, nodes=nodes, hosts=hosts)


def exchange_snapshot(*, failed: dict[str, str] | None = None) -> Snapshot:
    """The sources the Exchange collector leaves for this lab (Autodiscover vdir URLs empty, as usual); ``failed``
    maps a source key to the error it should carry instead."""
    snapshot = Snapshot.new()
    failed = failed or {}

    def add(name: str, data: object, scope: str | None = None) -> None:
        key = f"{name}@{scope}" if scope else name
        if key in failed:
            snapshot.add(SourceResult.error_result(name, failed[key], command="Get-…", scope=scope))
        else:
            snapshot.add(SourceResult.ok_result(name, data, command="Get-…", scope=scope))

    add("exchange.servers", [
        {"Name": "EX01", "Fqdn": "ex01.contoso.com", "IsEdgeServer": False},
        {"Name": "EX02", "Fqdn": "ex02.contoso.com", "IsEdgeServer": False},
        {"Name": "EDGE1", "Fqdn": "edge1.contoso.com", "IsEdgeServer": True},
    ])
    for server in ("EX01", "EX02"):
        for protocol, source in VDIR_SOURCES.items():
            internal = external = None
            if protocol != "Autodiscover":
                internal = f"https://{server.lower()}.contoso.com{PATHS[protocol]}"
                external = f"https://mail.contoso.com{PATHS[protocol]}"
            add(source, [{"Server": server, "Identity": f"{server}\\{protocol} (Default Web Site)",
                          "InternalUrl": internal, "ExternalUrl": external}], scope=server)
    add("exchange.client_access_services", [
        {"Name": server, "AutodiscoverServiceInternalUri": "https://autodiscover.contoso.com/Autodiscover/Autodiscover.xml"}
        for server in ("EX01", "EX02")])
    add("exchange.mailboxes", [
        {"Name": "Discovery", "PrimarySmtpAddress": "discovery@contoso.com",
         "RecipientTypeDetails": "DiscoveryMailbox"},
        {"Name": "Alice", "PrimarySmtpAddress": "alice@contoso.com", "RecipientTypeDetails": "UserMailbox"},
    ])
    return snapshot
