"""A known-good evidence snapshot: Contoso, two Exchange SE servers and an Edge, one tenant, every prerequisite met.

Per-check test cases (tests/check_cases.yaml) change one fact of it and state the expected status. Values follow the
source contract (docs/sources.md) and the shapes of the real captures; this data is synthetic.
"""

from __future__ import annotations

import copy
import functools
import pickle
from typing import Any

from hma_check.contract.snapshot import Snapshot, SourceResult

COLLECTED_AT = "2026-11-20T09:00:00Z"
TENANT = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"
EVOSTS = "EvoSts - 0b6f1d2c-7a4e-4f55-9d3c-2e8a1b0c9d7f"
DEDICATED_APP = "3c9e5b1a-8d2f-4e6a-b7c0-1f2d3e4a5b6c"
AUTH_THUMBPRINT = "2D10A746D6BB8D795F1679AEBD89D5D2AE583CB7"
SAN_THUMBPRINT = "611C687D3BB2F1D4A2E5C6B7980A1B2C3D4E5F60"
SERVERS = ("EX01", "EX02")
EDGE = "EDGE01"
SE_BUILD = "Version 15.2 (Build 2562.17)"
EXO = "00000002-0000-0ff1-ce00-000000000000"
HOSTS = ("mail.contoso.com", "autodiscover.contoso.com")


def _vdir(server: str, path: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "Server": server, "Name": name, "Identity": f"{server}\\{name}",
        "InternalUrl": f"https://mail.contoso.com/{path}", "ExternalUrl": f"https://mail.contoso.com/{path}",
        **extra,
    }


def _server_sources(server: str) -> dict[str, Any]:
    methods = ["Ntlm", "OAuth", "Negotiate"]
    return {
        "exchange.mapi_virtual_directories": [_vdir(
            server, "mapi", "mapi (Default Web Site)", IISAuthenticationMethods=list(methods),
            InternalAuthenticationMethods=list(methods), ExternalAuthenticationMethods=list(methods))],
        "exchange.web_services_virtual_directories": [_vdir(
            server, "EWS/Exchange.asmx", "EWS (Default Web Site)", OAuthAuthentication=True, BasicAuthentication=False,
            WindowsAuthentication=True, WSSecurityAuthentication=True,
            InternalAuthenticationMethods=["Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"],
            ExternalAuthenticationMethods=["Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"])],
        "exchange.oab_virtual_directories": [_vdir(
            server, "OAB", "OAB (Default Web Site)", OAuthAuthentication=True, BasicAuthentication=False,
            WindowsAuthentication=True, InternalAuthenticationMethods=["WindowsIntegrated", "OAuth"],
            ExternalAuthenticationMethods=["WindowsIntegrated", "OAuth"])],
        "exchange.autodiscover_virtual_directories": [{
            **_vdir(server, "Autodiscover/Autodiscover.xml", "Autodiscover (Default Web Site)"),
            "InternalUrl": None, "ExternalUrl": None, "OAuthAuthentication": True, "BasicAuthentication": True,
            "WindowsAuthentication": True, "WSSecurityAuthentication": True,
            "InternalAuthenticationMethods": ["Basic", "Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"],
            "ExternalAuthenticationMethods": ["Basic", "Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"]}],
        "exchange.activesync_virtual_directories": [_vdir(
            server, "Microsoft-Server-ActiveSync", "Microsoft-Server-ActiveSync (Default Web Site)",
            BasicAuthEnabled=False, WindowsAuthEnabled=False, InternalAuthenticationMethods=["OAuth"],
            ExternalAuthenticationMethods=["OAuth"])],
        "exchange.owa_virtual_directories": [_vdir(
            server, "owa", "owa (Default Web Site)", OAuthAuthentication=False, BasicAuthentication=True,
            FormsAuthentication=True, AdfsAuthentication=False, DigestAuthentication=False, WindowsAuthentication=False,
            InternalAuthenticationMethods=["Basic", "Fba"], ExternalAuthenticationMethods=["Fba"])],
        "exchange.ecp_virtual_directories": [_vdir(
            server, "ecp", "ecp (Default Web Site)", OAuthAuthentication=False, BasicAuthentication=True,
            FormsAuthentication=True, AdfsAuthentication=False, DigestAuthentication=False, WindowsAuthentication=False,
            InternalAuthenticationMethods=["Basic", "Fba"], ExternalAuthenticationMethods=["Fba"])],
        "exchange.outlook_anywhere": [{
            "Server": server, "Identity": f"{server}\\Rpc (Default Web Site)", "InternalHostname": "mail.contoso.com",
            "ExternalHostname": "mail.contoso.com", "SSLOffloading": False, "InternalClientsRequireSsl": True,
            "ExternalClientsRequireSsl": True, "InternalClientAuthenticationMethod": "Ntlm",
            "ExternalClientAuthenticationMethod": "Negotiate", "IISAuthenticationMethods": ["Basic", "Ntlm", "Negotiate"]}],
        "exchange.exchange_certificates": [
            {"Thumbprint": AUTH_THUMBPRINT, "Subject": "CN=Microsoft Exchange Server Auth Certificate",
             "Issuer": "CN=Microsoft Exchange Server Auth Certificate", "SerialNumber": "1A2B3C",
             "NotBefore": "2025-06-01T00:00:00Z", "NotAfter": "2030-06-01T00:00:00Z",
             "DnsNameList": [], "IsSelfSigned": True, "HasServerAuthEku": True,
             "SignatureAlgorithm": "sha256RSA", "PublicKeySize": 2048},
            {"Thumbprint": SAN_THUMBPRINT, "Subject": "CN=mail.contoso.com", "Issuer": "CN=Contoso Issuing CA 1",
             "SerialNumber": "4D5E6F", "NotBefore": "2026-01-10T00:00:00Z", "NotAfter": "2027-09-10T00:00:00Z",
             "DnsNameList": ["mail.contoso.com", "autodiscover.contoso.com"], "IsSelfSigned": False,
             "HasServerAuthEku": True, "SignatureAlgorithm": "sha256RSA", "PublicKeySize": 2048},
        ],
        "os.tls_registry": {
            "Protocols": {
                "TLS 1.0": {"Server": {"Enabled": 0, "DisabledByDefault": 1}, "Client": {"Enabled": 0, "DisabledByDefault": 1}},
                "TLS 1.1": {"Server": {"Enabled": 0, "DisabledByDefault": 1}, "Client": {"Enabled": 0, "DisabledByDefault": 1}},
                "TLS 1.2": {"Server": {"Enabled": 1, "DisabledByDefault": 0}, "Client": {"Enabled": 1, "DisabledByDefault": 0}},
                "TLS 1.3": {"Server": {"Enabled": None, "DisabledByDefault": None},
                            "Client": {"Enabled": None, "DisabledByDefault": None}},
            },
            "NETFramework": {"v2.0.50727": {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": 1},
                             "v4.0.30319": {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": 1}},
            "NETFrameworkWow6432Node": {"v2.0.50727": {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": 1},
                                        "v4.0.30319": {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": 1}},
        },
        "os.operating_system": {"Caption": "Microsoft Windows Server 2022 Standard", "Version": "10.0.20348",
                                "BuildNumber": "20348"},
        "os.exsetup_version": {"FileVersion": "15.02.2562.017", "Path": "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\bin\\ExSetup.exe"},
        "os.auth_certificate": {"Thumbprint": AUTH_THUMBPRINT, "Subject": "CN=Microsoft Exchange Server Auth Certificate",
                                "NotAfter": "2030-06-01T00:00:00Z", "HasPrivateKey": True},
        "os.next_auth_certificate": None,   # Get-AuthConfig names no next certificate
        "os.iis_ssl_flags": {f"/{path}": {"sslFlags": "Ssl, Ssl128", "RequireSsl": True,
                                          "Location": f"Default Web Site/{path}"}
                             for path in ("mapi", "EWS", "Autodiscover", "OAB", "Microsoft-Server-ActiveSync")},
    }


def _org_sources(names: tuple[str, ...]) -> dict[str, Any]:
    servers = [{"Name": name, "Fqdn": f"{name.lower()}.contoso.com", "AdminDisplayVersion": SE_BUILD,
                "ServerRole": "Mailbox", "Site": "contoso.com/Configuration/Sites/Default-First-Site-Name",
                "Edition": "Enterprise", "IsEdgeServer": False, "IsClientAccessServer": True, "IsMailboxServer": True,
                "InternetWebProxy": None} for name in names]
    servers.append({"Name": EDGE, "Fqdn": "edge01.perimeter.contoso.com", "AdminDisplayVersion": SE_BUILD,
                    "ServerRole": "Edge", "Site": None, "Edition": "Standard", "IsEdgeServer": True,
                    "IsClientAccessServer": False, "IsMailboxServer": False, "InternetWebProxy": None})
    mailboxes = [{"Name": f"User {i}", "UserPrincipalName": f"user{i}@contoso.com",
                  "PrimarySmtpAddress": f"user{i}@contoso.com", "RecipientTypeDetails": "UserMailbox",
                  "Sid": f"S-1-5-21-1004336348-1177238915-682003330-{1200 + i}"} for i in range(1, 6)]
    mailboxes.append({"Name": "Room 1", "UserPrincipalName": "room1@contoso.com", "PrimarySmtpAddress": "room1@contoso.com",
                      "RecipientTypeDetails": "RoomMailbox", "Sid": "S-1-5-21-1004336348-1177238915-682003330-1301"})
    return {
        "exchange.servers": servers,
        "exchange.organization_config": {"Name": "Contoso", "OAuth2ClientProfileEnabled": False, "MapiHttpEnabled": True,
                                         "EnableDownloadDomains": False, "DefaultAuthenticationPolicy": "Block Legacy Auth",
                                         "PerTenantSwitchToESTSEnabled": False},
        "exchange.auth_servers": [
            {"Name": EVOSTS, "Type": "AzureAD", "Enabled": True, "IsDefaultAuthorizationEndpoint": False,
             "Realm": TENANT, "DomainName": ["contoso.onmicrosoft.com"],
             "AuthMetadataUrl": f"https://login.windows.net/{TENANT}/federationmetadata/2007-06/federationmetadata.xml",
             "ApplicationIdentifier": DEDICATED_APP, "IssuerIdentifier": "00000001-0000-0000-c000-000000000000",
             "TokenIssuingEndpoint": "https://login.windows.net/common/oauth2/token"},
            {"Name": "ACS - 7d1f", "Type": "MicrosoftACS", "Enabled": True, "IsDefaultAuthorizationEndpoint": False,
             "Realm": TENANT, "DomainName": [], "AuthMetadataUrl": f"https://accounts.accesscontrol.windows.net/{TENANT}/metadata/json/1",
             "ApplicationIdentifier": None, "IssuerIdentifier": "00000001-0000-0000-c000-000000000000",
             "TokenIssuingEndpoint": f"https://accounts.accesscontrol.windows.net/{TENANT}/tokens/OAuth/2"},
        ],
        "exchange.partner_applications": [
            {"Name": "Exchange Online", "ApplicationIdentifier": EXO, "Enabled": True, "UseAuthServer": True,
             "AuthMetadataUrl": "", "Realm": "", "LinkedAccount": "contoso.com/Users/Exchange Online-ApplicationAccount"},
            {"Name": "Microsoft Graph", "ApplicationIdentifier": "00000003-0000-0000-c000-000000000000", "Enabled": True,
             "UseAuthServer": True, "AuthMetadataUrl": "", "Realm": "", "LinkedAccount": None},
        ],
        "exchange.auth_config": {"CurrentCertificateThumbprint": AUTH_THUMBPRINT, "PreviousCertificateThumbprint": "",
                                 "NextCertificateThumbprint": "", "NextCertificateEffectiveDate": None,
                                 "ServiceName": EXO, "Realm": ""},
        "exchange.hybrid_configuration": {
            "OnPremisesSmartHost": "mail.contoso.com", "Domains": ["contoso.com"],
            "Features": ["FreeBusy", "MoveMailbox", "Mailtips", "MessageTracking", "OwaRedirection", "OnlineArchive",
                         "SecureMail", "Photos"],
            "TlsCertificateName": "<I>CN=Contoso Issuing CA 1<S>CN=mail.contoso.com", "ClientAccessServers": [],
            "SendingTransportServers": list(names), "ReceivingTransportServers": list(names),
            "EdgeTransportServers": [], "ServiceInstance": 0},
        "exchange.intra_organization_connectors": [
            {"Name": "HybridIOC - 0b6f1d2c", "Enabled": True,
             "DiscoveryEndpoint": "https://autodiscover-s.outlook.com/autodiscover/autodiscover.svc",
             "TargetAddressDomains": ["contoso.mail.onmicrosoft.com"], "TargetSharingEpr": None}],
        "exchange.setting_overrides": [
            {"Name": "EnableExchangeHybrid3PAppFeature", "ComponentName": "Global",
             "SectionName": "ExchangeOnpremAsThirdPartyAppId", "Parameters": ["Enabled=true"], "Server": None,
             "Status": "Accepted", "MinVersion": None, "MaxVersion": None,
             "Reason": "Created by ConfigureExchangeHybridApplication.ps1"}],
        "exchange.client_access_services": [
            {"Name": name, "AutodiscoverServiceInternalUri": "https://autodiscover.contoso.com/Autodiscover/Autodiscover.xml"}
            for name in names],
        "exchange.accepted_domains": [{"Name": "contoso.com", "DomainName": "contoso.com", "DomainType": "Authoritative",
                                       "Default": True}],
        "exchange.mailboxes": mailboxes,
        "exchange.admin_users": [
            {"Name": "Ada Admin", "UserPrincipalName": "ada.admin@contoso.com", "SamAccountName": "ada.admin",
             "Sid": "S-1-5-21-1004336348-1177238915-682003330-1105", "RecipientTypeDetails": "User"}],
        "exchange.authentication_policies": [
            {"Name": "Block Legacy Auth", "Identity": "Block Legacy Auth",
             "DistinguishedName": "CN=Block Legacy Auth,CN=Auth Policies,CN=Contoso,CN=Microsoft Exchange,"
                                  "CN=Services,CN=Configuration,DC=contoso,DC=com",
             "BlockLegacyAuthActiveSync": True, "BlockLegacyAuthAutodiscover": True,
             "BlockLegacyAuthImap": True, "BlockLegacyAuthMapi": True, "BlockLegacyAuthOfflineAddressBook": True,
             "BlockLegacyAuthPop": True, "BlockLegacyAuthRpc": True, "BlockLegacyAuthWebServices": True,
             **{f"BlockModernAuth{p}": False for p in ("ActiveSync", "Autodiscover", "Imap", "Mapi",
                                                         "OfflineAddressBook", "Pop", "Rpc", "WebServices")}}],
        "exchange.user_authentication_policies": [],   # nobody has a policy of their own
        "exchange.cas_mailboxes_mapi_disabled": [],
        "exchange.activesync_organization_settings": {"DefaultAccessLevel": "Allow"},
        "exchange.activesync_device_access_rules": [],
        # the baseline assesses the optional OWA/ECP area too, so its checks have PASS and FAIL cases
        "scan.options": {"owa_ecp": True},
    }


def _tenant_sources() -> dict[str, Any]:
    users = [{"userPrincipalName": f"user{i}@contoso.com", "mail": f"user{i}@contoso.com", "onPremisesSyncEnabled": True,
              "onPremisesSecurityIdentifier": f"S-1-5-21-1004336348-1177238915-682003330-{1200 + i}"} for i in range(1, 6)]
    users.append({"userPrincipalName": "ada.admin@contoso.com", "mail": None, "onPremisesSyncEnabled": True,
                  "onPremisesSecurityIdentifier": "S-1-5-21-1004336348-1177238915-682003330-1105"})
    users.append({"userPrincipalName": "cloud.admin@contoso.onmicrosoft.com", "mail": None,
                  "onPremisesSyncEnabled": None, "onPremisesSecurityIdentifier": None})
    spns = [f"https://{host}/" for host in HOSTS] + [f"{EXO}/{host}" for host in HOSTS] + [
        f"{EXO}/outlook.com", f"{EXO}/*.outlook.com", f"{EXO}/outlook.office365.com", EXO]
    return {
        "graph.exo_service_principal": {
            "id": "9b8c7d6e-5f4a-4b3c-8d2e-1f0a9b8c7d6e", "appId": EXO, "displayName": "Office 365 Exchange Online",
            "servicePrincipalNames": spns, "replyUrls": [f"https://{HOSTS[0]}/owa", f"https://{HOSTS[0]}/ecp"],
            "keyCredentials": []},
        # one ordinary Application Proxy application (an intranet site), read with its onPremisesPublishing
        "graph.app_proxy_applications": [{
            "id": "5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d", "appId": "8e9f0a1b-2c3d-4e5f-a6b7-c8d9e0f1a2b3",
            "displayName": "Contoso Intranet",
            "tags": ["WindowsAzureActiveDirectoryIntegratedApp", "WindowsAzureActiveDirectoryOnPremApp"],
            "servicePrincipalNames": ["https://intranet-contoso.msappproxy.net/", "8e9f0a1b-2c3d-4e5f-a6b7-c8d9e0f1a2b3"],
            "homepage": "https://intranet-contoso.msappproxy.net/", "replyUrls": ["https://intranet-contoso.msappproxy.net/"],
            "logoutUrl": "https://intranet-contoso.msappproxy.net/?appproxy=logout",
            "application": {"id": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", "appId": "8e9f0a1b-2c3d-4e5f-a6b7-c8d9e0f1a2b3",
                            "displayName": "Contoso Intranet", "onPremisesPublishing": {
                                "externalUrl": "https://intranet-contoso.msappproxy.net/",
                                "internalUrl": "http://intranet.contoso.local/", "alternateUrl": None,
                                "externalAuthenticationType": "aadPreAuthentication",
                                "isOnPremPublishingEnabled": True}}}],
        "graph.organization": [{
            "id": TENANT, "displayName": "Contoso", "onPremisesSyncEnabled": True,
            "onPremisesLastSyncDateTime": "2026-11-20T08:30:00Z",
            "verifiedDomains": [{"name": "contoso.com", "type": "Managed", "isDefault": True, "isInitial": False},
                                {"name": "contoso.onmicrosoft.com", "type": "Managed", "isDefault": False, "isInitial": True}]}],
        "graph.domains": [{"id": "contoso.com", "authenticationType": "Managed", "isVerified": True, "isDefault": True},
                          {"id": "contoso.onmicrosoft.com", "authenticationType": "Managed", "isVerified": True,
                           "isDefault": False}],
        "graph.users": users,
        "graph.security_defaults": {"id": "00000000-0000-0000-0000-000000000000", "isEnabled": False},
        "graph.conditional_access_policies": [{
            "id": "1a2b3c4d-0000-4000-8000-000000000001", "displayName": "Block legacy authentication", "state": "enabled",
            "conditions": {"clientAppTypes": ["exchangeActiveSync", "other"],
                           "applications": {"includeApplications": ["All"], "excludeApplications": []},
                           "users": {"includeUsers": ["All"], "excludeUsers": [], "includeGroups": [], "excludeGroups": [],
                                     "includeRoles": [], "excludeRoles": []}},
            "grantControls": {"operator": "OR", "builtInControls": ["block"]}}],
        "graph.subscribed_skus": [{"skuId": "efccb6f7-5641-4e0e-bd10-b4976e1bf68e", "skuPartNumber": "EMS",
                                   "capabilityStatus": "Enabled",
                                   "servicePlans": [{"servicePlanName": "INTUNE_A", "provisioningStatus": "Success"},
                                                    {"servicePlanName": "AAD_PREMIUM", "provisioningStatus": "Success"}]}],
    }


BEARER_PATHS = {"MAPI": "/mapi/", "EWS": "/EWS/Exchange.asmx", "OAB": "/OAB/",
                "Autodiscover": "/Autodiscover/Autodiscover.xml", "ActiveSync": "/Microsoft-Server-ActiveSync"}


def bearer_response(host: str, protocol: str, path: str) -> dict[str, Any]:
    challenge = (f'Bearer client_id="{EXO}", trusted_issuers="00000001-0000-0000-c000-000000000000@{TENANT}", '
                 'token_types="app_asserted_user_v1 service_asserted_app_v1"')
    return {
        "url": f"https://{host}{path}", "host": host, "path": path, "protocol": protocol, "address": "203.0.113.10",
        "status": 401, "www_authenticate": [challenge, "Negotiate", "NTLM", f'Basic realm="{host}"'],
        "bearer": {"client_id": EXO, "trusted_issuers": [f"00000001-0000-0000-c000-000000000000@{TENANT}"],
                   "token_types": "app_asserted_user_v1 service_asserted_app_v1", "authorization_uri": None,
                   "error": None},
        "x_ms_diagnostics": '4000000;reason="Flighting is not enabled for domain \'\'.";error_category="oauth_not_available"',
        "x_feserver": "EX01", "request_id": "a8e9dfb4-cb06-4b18-80a0-b110220177e1", "location": None,
    }


def _group(protocol: str, authentication: str, family: str, version: str, modern: str, people: list[str],
           requests: int, *, authenticated: bool = True, applications: list[str] = (),  # type: ignore[assignment]
           exchange_accounts: int = 0) -> dict[str, Any]:
    """One logs.httpproxy client group, as hma_check.collect.logs.httpproxy writes it."""
    rows = lambda names: [{"user": n, "requests": max(1, requests // max(1, len(names))),  # noqa: E731
                           "last_seen": "2026-11-19T16:40:00.000Z"} for n in names]
    return {"Protocol": protocol, "AuthenticationType": authentication, "authenticated": authenticated,
            "modern_authentication": authentication in ("Bearer", "OAuth"), "family": family, "version": version,
            "client": f"{family} {version}".strip(), "modern": modern, "modern_note": "baseline",
            "requests": requests, "users": len(people) + len(applications), "people": rows(people),
            "applications": rows(list(applications)), "exchange_accounts": exchange_accounts,
            "first_seen": "2026-11-13T08:00:00.000Z", "last_seen": "2026-11-19T16:40:00.000Z"}


def logs_httpproxy() -> dict[str, Any]:
    """A week of HttpProxy logs after the switch, where nobody needs anything: Outlook and Outlook mobile on Bearer,
    Exchange's own probes, browsers on OWA (client IPs are never in this source)."""
    outlook = ("Outlook for Windows", "16.0.17928", "yes")
    clients = [
        _group("Mapi", "Bearer", *outlook, ["CONTOSO\\alice", "CONTOSO\\bob"], 840),
        _group("Ews", "Bearer", *outlook, ["CONTOSO\\alice", "CONTOSO\\bob"], 220),
        _group("Autodiscover", "Bearer", *outlook, ["CONTOSO\\alice", "CONTOSO\\bob"], 64),
        _group("Eas", "Bearer", "Outlook for iOS and Android", "1.0", "profile", ["CONTOSO\\carol"], 310),
        _group("Mapi", "Negotiate", "Exchange monitoring", "", "n/a", [], 1200, exchange_accounts=2),
        _group("Owa", "FBA", "Web browser", "Edge 129", "yes", [], 40, authenticated=False),
    ]
    daily = [{"date": "2026-11-19", "Protocol": c["Protocol"], "AuthenticationType": c["AuthenticationType"],
              "authenticated": c["authenticated"], "modern_authentication": c["modern_authentication"],
              "exchange_monitoring": c["modern"] == "n/a", "requests": c["requests"]} for c in clients]
    return {"granularity": "request", "window": {"first": "2026-11-13T08:00:00.000Z",
                                                 "last": "2026-11-19T16:40:00.000Z"},
            "files": 336, "lines": 2690, "requests": 2674, "malformed": {"lines": 0, "examples": []},
            "pseudonymised": False,
            "servers": [{"server": name, "status": "ok", "requests": 1337, "first_seen": "2026-11-13T08:00:00.000Z",
                         "last_seen": "2026-11-19T16:40:00.000Z"} for name in SERVERS],
            "clients": clients,
            "user_agents": [{"UserAgent": "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)",
                             "client": "Outlook for Windows 16.0.17928", "family": "Outlook for Windows",
                             "modern": "yes", "requests": 1124}],
            "daily": daily, "untracked": {"user_agents": 0, "combinations": 0, "user_pairs": 0}}


def _probe_results() -> list[SourceResult]:
    results = []
    for host in HOSTS:
        for protocol, path in BEARER_PATHS.items():
            data = bearer_response(host, protocol, path)
            results.append(_ok("probe.bearer", data, f"GET {data['url']} (Authorization: Bearer)", scope=data["url"]))
        results.append(_ok("probe.tls", {
            "host": host, "port": 443, "address": "203.0.113.10",
            "versions": {"TLSv1.0": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": True}, "version_errors": {},
            "certificate": {"subject": "CN=mail.contoso.com", "issuer": "CN=Contoso Issuing CA 1",
                            "not_before": "2026-01-10T00:00:00Z", "not_after": "2027-09-10T00:00:00Z",
                            "dns_names": ["mail.contoso.com", "autodiscover.contoso.com"], "thumbprint": SAN_THUMBPRINT,
                            "chain_verified": True, "verify_error": None},
            "names_in_scope": [host]}, f"TLS handshakes to {host}:443", scope=f"{host}:443"))
    for protocol in ("ActiveSync", "EWS"):
        url = f"https://autodiscover.contoso.com/autodiscover/autodiscover.json?Email=user1@contoso.com&Protocol={protocol}"
        returned = "https://mail.contoso.com/Microsoft-Server-ActiveSync" if protocol == "ActiveSync" \
            else "https://mail.contoso.com/EWS/Exchange.asmx"
        results.append(_ok("probe.autodiscover_v2", {"url": url, "host": "autodiscover.contoso.com",
                                                     "protocol": protocol, "address": "203.0.113.10", "status": 200,
                                                     "returned_url": returned, "returned_host": "mail.contoso.com",
                                                     "location": None},
                            f"GET {url}", scope=url.replace("Email=user1@contoso.com&", "")))
    return results


def _ok(name: str, data: Any, command: str, scope: str | None = None) -> SourceResult:
    return SourceResult(name=name, scope=scope, status="ok", command=command, started=COLLECTED_AT, duration_ms=12,
                        data=copy.deepcopy(data))


def build(server_names: tuple[str, ...] = SERVERS) -> Snapshot:
    """A fresh copy of the baseline every call, so tests can change it freely (server names included). The default
    one is built once per test process and unpickled each call: a deep copy, four times faster than building it."""
    if server_names != SERVERS:
        return _build(server_names)
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = pickle.dumps(_build(SERVERS), protocol=pickle.HIGHEST_PROTOCOL)
    return pickle.loads(_DEFAULT)


_DEFAULT: bytes | None = None


@functools.cache
def shipped_catalogue() -> Any:
    """The shipped checks, loaded once per test process: shared by the session fixture ``catalogue`` and by
    parametrizations built from it at collection (each load compiles every expression again, half a second)."""
    from hma_check.commands.pipeline import load_all_checks

    return load_all_checks()


def _build(server_names: tuple[str, ...]) -> Snapshot:
    from hma_check.contract.sources import BY_NAME

    snapshot = Snapshot(collected_at=COLLECTED_AT, collected_by={"user": "consultant", "host": "laptop01"},
                        target={"organization": "Contoso", "exchange": "ex01.contoso.com", "tenants": [TENANT],
                                "mode": "test baseline"})
    for name, data in _org_sources(server_names).items():
        snapshot.add(_ok(name, data, BY_NAME[name].filled_by))
    for server in server_names:
        for name, data in _server_sources(server).items():
            snapshot.add(_ok(name, data, BY_NAME[name].filled_by.replace("<server>", server), scope=server))
    for name, data in _tenant_sources().items():
        snapshot.add(_ok(name, data, BY_NAME[name].filled_by, scope=TENANT))
    for result in _probe_results():
        snapshot.add(result)
    snapshot.add(_ok("logs.httpproxy", logs_httpproxy(), BY_NAME["logs.httpproxy"].filled_by))
    return snapshot


def _resolve_key(key: str) -> str:
    return key.replace("@TENANT", "@" + TENANT)


def apply_ops(snapshot: Snapshot, ops: list[dict[str, Any]]) -> Snapshot:
    """The small patch language of tests/check_cases.yaml, applied in place."""
    for op in ops:
        if isinstance(op, list):   # a YAML anchor of several operations, reused inside another list
            apply_ops(snapshot, op)
            continue
        if "drop" in op:   # the source is not in the evidence at all (someone deleted it from evidence.json)
            target = _resolve_key(op["drop"])
            assert target in snapshot.sources, f"no source {target} to drop"
            del snapshot.sources[target]
            continue
        if "skip" in op:   # the collector skipped it, with op["reason"]
            target = _resolve_key(op["skip"])
            hits = [r for k, r in snapshot.sources.items() if k == target or r.name == target]
            assert hits, f"no source {target} to skip"
            for result in hits:
                result.status, result.error, result.data = "skipped", op.get("reason", "skipped by the test"), None
            continue
        if "add" in op:    # a new source result: {add: key, data: ..., status: ok}
            name, _, scope = _resolve_key(op["add"]).partition("@")
            status = op.get("status", "ok")
            snapshot.add(SourceResult(name=name, scope=scope or None, status=status, command=f"test {name}",
                                      started=COLLECTED_AT, duration_ms=0,
                                      error=op.get("reason") if status != "ok" else None,
                                      data=op.get("data") if status == "ok" else None))
            continue
        if "fail" in op:
            target = _resolve_key(op["fail"])
            hits = [r for k, r in snapshot.sources.items() if k == target or r.name == target]
            assert hits, f"no source {target} to fail"
            for result in hits:
                result.status, result.error, result.data = "error", "TimeoutError: simulated collection failure", None
            continue
        kind = next(k for k in ("set", "append", "remove") if k in op)
        key, *path = op[kind]
        key = _resolve_key(key)
        assert key in snapshot.sources, f"no source {key} in the baseline"
        result = snapshot.sources[key]
        if kind == "set" and not path:
            result.data = copy.deepcopy(op["to"])   # YAML anchors share one object: each use gets its own
            continue
        container = result.data
        for part in path[:-1]:
            container = container[part]
        last = path[-1] if path else None
        if kind == "set":
            container[last] = copy.deepcopy(op["to"])
        elif kind == "append":
            (container[last] if last is not None else container).append(copy.deepcopy(op["value"]))
        else:
            del container[last]
    return snapshot
