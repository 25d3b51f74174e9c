"""The source contract: every source key the checks may use, what fills it and the shape of its data.

This registry is the single place collectors and checks agree on. docs/sources.md is generated from it
(``python -m hma_check.contract.sources > docs/sources.md``; a test keeps the two in step), and the check loader refuses an
expression that names a source not listed here.

Conventions for ``data`` (all of it JSON):
- Exchange objects are dicts keyed by the vendor's property names, verbatim (``IISAuthenticationMethods``), normalised
  the way a remote PowerShell session sends them: enums, ADObjectId, ServerVersion and sizes are their ToString()
  strings; multi-valued properties are lists of strings; dates are ISO 8601 UTC strings with a Z; URIs are strings;
  Nil is null. The live collector and offline import share one normaliser, so both produce identical data.
- Graph objects keep Graph's camelCase JSON property names.
- Probe results are hma-check's own records and use snake_case.
- A per-server source is stored once per server with ``scope`` = the server's Name from exchange.servers; a Graph
  source once per tenant with ``scope`` = the tenant id; a probe once per URL or host:port.
- null is a real value ("the property is empty"); a fact that could not be collected is a source with status error,
  never a default.
- Coverage: a per-server source names the servers that have it (``servers``: every server of exchange.servers except
  the ones its rule leaves out, such as Edge Transport and Exchange 2010 servers for the virtual directories). Such a
  server must have a result, and a source that ``one_or_more`` marks must hold at least one object for it; otherwise
  the checks that read it are ERROR for that server. A server the rule leaves out, and an organisation-wide source
  skipped where its ``minimum_build`` says it cannot exist, make those checks NOT_APPLICABLE with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

SCOPES = {
    None: "organisation-wide: one result",
    "server": "one result per Exchange server (scope = the server's Name)",
    "tenant": "one result per Entra tenant (scope = the tenant id)",
    "url": "one result per probed URL (scope = the URL)",
    "endpoint": "one result per probed host:port (scope = host:port)",
}


# Which servers of exchange.servers have a per-server source. Each rule gives, for one server record, why the source
# does not exist there (None: the server must have it). Unknown facts (no AdminDisplayVersion, no role flags) never
# leave a server out: its data is then required, so a gap is an ERROR rather than a silent omission.
EDGE_SERVER = ("Edge Transport server: it sits outside the domain, has no client access virtual directories and "
               "is not read")
PRE_2013_SERVER = ("{version}: Exchange 2010 and older are not read by these cmdlets (manage them from their own "
                   "shell); such a server cannot take part in HMA at all (HMA-TOPO-001)")
NO_CLIENT_ACCESS = ("the server has no Client Access role (IsClientAccessServer is False): it has no front-end "
                    "virtual directories")


def _edge(server: dict[str, Any]) -> bool:
    return server.get("IsEdgeServer") is True or "edge" in str(server.get("ServerRole") or "").lower()


def _pre_2013(server: dict[str, Any]) -> str | None:
    build = server_build(server)
    if build is not None and build[0] < 15:
        return PRE_2013_SERVER.format(version=server.get("AdminDisplayVersion"))
    return None


def _windows(server: dict[str, Any]) -> str | None:
    return EDGE_SERVER if _edge(server) else None


def _exchange(server: dict[str, Any]) -> str | None:
    return EDGE_SERVER if _edge(server) else _pre_2013(server)


def _client_access(server: dict[str, Any]) -> str | None:
    reason = _exchange(server)
    if reason is None and server.get("IsClientAccessServer") is False:
        return NO_CLIENT_ACCESS
    return reason


SERVER_RULES: dict[str, tuple[str, Callable[[dict[str, Any]], str | None]]] = {
    "windows": ("every server except Edge Transport servers", _windows),
    "exchange": ("every Exchange 2013 or later server except Edge Transport servers", _exchange),
    "client_access": ("every Exchange 2013 or later server with the Client Access role (IsClientAccessServer), "
                      "except Edge Transport servers", _client_access),
}


# ServerVersion.ToString() as Get-ExchangeServer sends it: 'Version 15.2 (Build 986.5)'.
_ADMIN_DISPLAY_VERSION = re.compile(r"Version\s+(\d+)\.(\d+)\s+\(Build\s+(\d+)\.(\d+)\)", re.IGNORECASE)


def parse_build(text: str) -> tuple[int, int, int, int]:
    """'Version 15.2 (Build 986.5)' or '15.2.986.5' -> (15, 2, 986, 5); ValueError otherwise."""
    match = _ADMIN_DISPLAY_VERSION.search(text) or re.fullmatch(r"\s*(\d+)\.(\d+)\.(\d+)\.(\d+)\s*", text)
    if match is None:
        raise ValueError(f"not a build number: {text!r}")
    major, minor, build, revision = (int(part) for part in match.groups())
    return major, minor, build, revision


def server_build(server: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """The build of a server record's AdminDisplayVersion, or None when it is missing or unreadable."""
    version = server.get("AdminDisplayVersion")
    try:
        return parse_build(version) if isinstance(version, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class SourceSpec:
    name: str
    filled_by: str
    shape: str
    scope: str | None = None
    servers: str | None = None          # scope 'server': the SERVER_RULES key naming the servers that have it
    one_or_more: bool = False           # scope 'server': every server that has it returns at least one object
    minimum_build: str | None = None    # organisation-wide: the cmdlet exists from this Exchange build on
    minimum_release: str | None = None  # ... and the release it is, for messages

    @property
    def collector(self) -> str:
        return self.name.split(".", 1)[0]

    def excluded(self, server: dict[str, Any]) -> str | None:
        """Why ``server`` has no result for this per-server source by design, or None when it must have one."""
        if self.servers is None:
            return None
        return SERVER_RULES[self.servers][1](server)

    def absent_everywhere(self, servers: list[dict[str, Any]]) -> str | None:
        """For an organisation-wide source with a minimum build: why no server can answer it, or None."""
        if self.minimum_build is None:
            return None
        minimum = parse_build(self.minimum_build)
        builds = [server_build(s) for s in servers if not _edge(s)]
        if not builds or any(b is None or (b[:2] == minimum[:2] and b >= minimum) for b in builds):
            return None
        return (f"{self.name} exists from {self.minimum_release} ({self.minimum_build}) on, and no server in "
                "exchange.servers runs that build or a later one")


_VDIR_COMMON = "Server, Identity, Name, InternalUrl, ExternalUrl, InternalAuthenticationMethods (list), ExternalAuthenticationMethods (list)"

SOURCES: tuple[SourceSpec, ...] = (
    # ------------------------------------------------------------------------------------------ Exchange, org-wide
    SourceSpec("exchange.servers", "Get-ExchangeServer",
               "list of {Name, Fqdn, AdminDisplayVersion ('Version 15.2 (Build 986.5)'), ServerRole ('Mailbox', "
               "'Mailbox, ClientAccess', 'Edge'...), Site, Edition, IsEdgeServer, IsClientAccessServer, IsMailboxServer, "
               "InternetWebProxy (str|null)}"),
    SourceSpec("exchange.organization_config", "Get-OrganizationConfig",
               "{Name, OAuth2ClientProfileEnabled, MapiHttpEnabled, EnableDownloadDomains, DefaultAuthenticationPolicy "
               "(str|null), PerTenantSwitchToESTSEnabled}"),
    SourceSpec("exchange.auth_servers", "Get-AuthServer",
               "list of {Name ('EvoSts - <GUID>' or 'EvoSTS'), Type ('AzureAD', 'MicrosoftACS', 'ADFS'), Enabled, "
               "IsDefaultAuthorizationEndpoint, Realm (tenant id), DomainName (list), AuthMetadataUrl, "
               "ApplicationIdentifier (str|null), IssuerIdentifier, TokenIssuingEndpoint}"),
    SourceSpec("exchange.partner_applications", "Get-PartnerApplication",
               "list of {Name, ApplicationIdentifier, Enabled, UseAuthServer, AuthMetadataUrl, Realm, LinkedAccount}"),
    SourceSpec("exchange.auth_config", "Get-AuthConfig",
               "{CurrentCertificateThumbprint, PreviousCertificateThumbprint, NextCertificateThumbprint, "
               "NextCertificateEffectiveDate (ISO|null), ServiceName, Realm}"),
    SourceSpec("exchange.hybrid_configuration", "Get-HybridConfiguration",
               "{OnPremisesSmartHost, Domains (list), Features (list), TlsCertificateName, ClientAccessServers (list), "
               "SendingTransportServers (list), ReceivingTransportServers (list), EdgeTransportServers (list), "
               "ServiceInstance} or null when the organisation has no hybrid configuration"),
    SourceSpec("exchange.intra_organization_connectors", "Get-IntraOrganizationConnector",
               "list of {Name, Enabled, DiscoveryEndpoint, TargetAddressDomains (list), TargetSharingEpr (str|null)}"),
    SourceSpec("exchange.setting_overrides", "Get-SettingOverride",
               "list of {Name, ComponentName, SectionName, Parameters (list of 'Name=Value'), Server (list|null), "
               "Status, MinVersion, MaxVersion, Reason}"),
    SourceSpec("exchange.client_access_services", "Get-ClientAccessService (Get-ClientAccessServer on Exchange 2013)",
               "list of {Name, AutodiscoverServiceInternalUri (str|null)}"),
    SourceSpec("exchange.accepted_domains", "Get-AcceptedDomain",
               "list of {Name, DomainName, DomainType, Default}"),
    SourceSpec("exchange.mailboxes", "Get-Mailbox -ResultSize Unlimited",
               "list of {Name, UserPrincipalName, PrimarySmtpAddress, RecipientTypeDetails, Sid (the user account's "
               "SID, 'S-1-5-21-...'; matched against graph.users onPremisesSecurityIdentifier)}"),
    SourceSpec("exchange.admin_users",
               "Get-RoleGroupMember -Identity 'Organization Management', then Get-User -Identity <member>",
               "list of {Name, UserPrincipalName, SamAccountName, Sid, RecipientTypeDetails}"),
    SourceSpec("exchange.authentication_policies", "Get-AuthenticationPolicy (Exchange 2019 CU2 and later)",
               "list of {Name, Identity, DistinguishedName, BlockLegacyAuthActiveSync, BlockLegacyAuthAutodiscover, "
               "BlockLegacyAuthImap, BlockLegacyAuthMapi, BlockLegacyAuthOfflineAddressBook, BlockLegacyAuthPop, "
               "BlockLegacyAuthRpc, BlockLegacyAuthWebServices, and from Exchange 2019 CU13 BlockModernAuthActiveSync, "
               "BlockModernAuthAutodiscover, BlockModernAuthImap, BlockModernAuthMapi, "
               "BlockModernAuthOfflineAddressBook, BlockModernAuthPop, BlockModernAuthRpc, BlockModernAuthWebServices "
               "(absent before CU13: the switches do not exist there)}", minimum_build="15.2.397.3",
               minimum_release="Exchange 2019 CU2"),
    SourceSpec("exchange.user_authentication_policies",
               "Get-User -ResultSize Unlimited -Filter \"AuthenticationPolicy -ne $null\" (Exchange 2019 CU2 and later)",
               "list of {Name, UserPrincipalName, RecipientTypeDetails, AuthenticationPolicy (the assigned policy)}: "
               "every user with a policy of its own; the others get the organisation's DefaultAuthenticationPolicy",
               minimum_build="15.2.397.3", minimum_release="Exchange 2019 CU2"),
    SourceSpec("exchange.cas_mailboxes_mapi_disabled",
               "Get-CASMailbox -ResultSize Unlimited -Filter \"MapiHttpEnabled -eq $false\"",
               "list of {Name, PrimarySmtpAddress, MapiHttpEnabled}"),
    SourceSpec("exchange.activesync_organization_settings", "Get-ActiveSyncOrganizationSettings",
               "{DefaultAccessLevel ('Allow', 'Block', 'Quarantine')}"),
    SourceSpec("exchange.activesync_device_access_rules", "Get-ActiveSyncDeviceAccessRule",
               "list of {Name, Characteristic, QueryString, AccessLevel}"),
    # ---------------------------------------------------------------------------------------- Exchange, per server
    SourceSpec("exchange.mapi_virtual_directories", "Get-MapiVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, IISAuthenticationMethods (list)}}", scope="server",
               servers="client_access", one_or_more=True),
    SourceSpec("exchange.web_services_virtual_directories", "Get-WebServicesVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, WindowsAuthentication, "
               "WSSecurityAuthentication}", scope="server", servers="client_access", one_or_more=True),
    SourceSpec("exchange.oab_virtual_directories", "Get-OabVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, WindowsAuthentication}}",
               scope="server", servers="client_access", one_or_more=True),
    SourceSpec("exchange.autodiscover_virtual_directories", "Get-AutodiscoverVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, WindowsAuthentication, "
               "WSSecurityAuthentication}", scope="server", servers="client_access", one_or_more=True),
    SourceSpec("exchange.activesync_virtual_directories", "Get-ActiveSyncVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, BasicAuthEnabled, WindowsAuthEnabled}}", scope="server",
               servers="client_access", one_or_more=True),
    SourceSpec("exchange.owa_virtual_directories", "Get-OwaVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, FormsAuthentication, "
               "AdfsAuthentication, DigestAuthentication, WindowsAuthentication}", scope="server",
               servers="client_access", one_or_more=True),
    SourceSpec("exchange.ecp_virtual_directories", "Get-EcpVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, FormsAuthentication, "
               "AdfsAuthentication, DigestAuthentication, WindowsAuthentication}", scope="server",
               servers="client_access", one_or_more=True),
    SourceSpec("exchange.outlook_anywhere", "Get-OutlookAnywhere -Server <server>",
               "list of {Server, Identity, InternalHostname, ExternalHostname, SSLOffloading, InternalClientsRequireSsl, "
               "ExternalClientsRequireSsl, InternalClientAuthenticationMethod, ExternalClientAuthenticationMethod, "
               "IISAuthenticationMethods (list)}", scope="server", servers="client_access", one_or_more=True),
    SourceSpec("exchange.exchange_certificates", "Get-ExchangeCertificate -Server <server>",
               "list of certificates decoded from RawData: {Thumbprint (upper-case hex SHA-1 of the DER), Subject, "
               "Issuer, SerialNumber, NotBefore, NotAfter, DnsNameList (list: SAN DNS names, else the CN), "
               "IsSelfSigned, HasServerAuthEku, SignatureAlgorithm, PublicKeySize, RawData (base64 DER)}",
               scope="server", servers="exchange", one_or_more=True),
    # ------------------------------------------------------------------------------- server OS, per server (WinRM)
    SourceSpec("os.tls_registry",
               "Get-ItemProperty on HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols\\"
               "TLS 1.0..1.3\\{Server,Client} and HKLM:\\SOFTWARE\\[Wow6432Node\\]Microsoft\\.NETFramework\\"
               "{v2.0.50727,v4.0.30319}",
               "{Protocols: {'TLS 1.0'|'TLS 1.1'|'TLS 1.2'|'TLS 1.3': {Server: {Enabled, DisabledByDefault}, "
               "Client: {Enabled, DisabledByDefault}}}, NETFramework: {'v2.0.50727'|'v4.0.30319': "
               "{SystemDefaultTlsVersions, SchUseStrongCrypto}}, NETFrameworkWow6432Node: {same}}; every value is the "
               "DWORD as read (0xffffffff reads as -1) or null when the value or key is absent", scope="server",
               servers="windows"),
    SourceSpec("os.exsetup_version", "Get-Command -Name ExSetup.exe -CommandType Application (its FileVersionInfo)",
               "{FileVersion ('15.02.1544.011': the exact build, security update included), Path}", scope="server",
               servers="windows"),
    SourceSpec("os.operating_system", "Get-CimInstance -ClassName Win32_OperatingSystem",
               "{Caption, Version ('10.0.20348'), BuildNumber}", scope="server", servers="windows"),
    SourceSpec("os.auth_certificate",
               "Get-ChildItem -Path Cert:\\LocalMachine\\My\\<CurrentCertificateThumbprint>; Get-ItemProperty -Path "
               "HKLM:\\SOFTWARE\\Microsoft\\SystemCertificates\\MY\\Certificates\\<thumbprint> -Name Blob",
               "{Thumbprint, Subject, NotAfter, HasPrivateKey (true|false; null when the store's registry Blob is "
               "not there to tell)} or null when the certificate is not in the store", scope="server",
               servers="windows"),
    SourceSpec("os.iis_ssl_flags",
               "Get-Content -LiteralPath C:\\Windows\\System32\\inetsrv\\config\\applicationHost.config -Raw (read "
               "only; the access section of each Default Web Site path)",
               "{'/mapi'|'/EWS'|'/Autodiscover'|'/OAB'|'/Microsoft-Server-ActiveSync': {sslFlags (as IIS stores it, e.g. "
               "'Ssl, Ssl128' or 'None'), RequireSsl ('Ssl' among the flags: IIS's Require SSL), Location (the "
               "<location> path the value comes from, '' the server level, null IIS's default None)}}",
               scope="server", servers="client_access"),
    SourceSpec("os.next_auth_certificate",
               "Get-ChildItem -Path Cert:\\LocalMachine\\My\\<NextCertificateThumbprint>; Get-ItemProperty -Path "
               "HKLM:\\SOFTWARE\\Microsoft\\SystemCertificates\\MY\\Certificates\\<thumbprint> -Name Blob",
               "{Thumbprint, Subject, NotBefore, NotAfter, HasPrivateKey (as os.auth_certificate)} or null when the "
               "certificate is not in the store, or when Get-AuthConfig names no NextCertificateThumbprint (nothing "
               "staged, nothing to look up: read exchange.auth_config to tell the two apart)", scope="server",
               servers="windows"),
    # ------------------------------------------------------------------------------------------ the scan itself
    SourceSpec("scan.options", "the scan configuration's options: section (hma-check import --owa-ecp offline)",
               "{owa_ecp (bool: assess HMA for Outlook on the web and the EAC)}; written by every scan and import, "
               "so optional areas are decided from the evidence alone"),
    # ---------------------------------------------------------------------------------------- Graph, per tenant
    SourceSpec("graph.exo_service_principal",
               "GET /v1.0/servicePrincipals(appId='00000002-0000-0ff1-ce00-000000000000')"
               "?$select=id,appId,displayName,servicePrincipalNames,replyUrls,keyCredentials",
               "{id, appId, displayName, servicePrincipalNames (list), replyUrls (list), keyCredentials (list of "
               "{keyId, type, usage, displayName, startDateTime, endDateTime})}", scope="tenant"),
    SourceSpec("graph.app_proxy_applications",
               "GET /v1.0/servicePrincipals?$filter=tags/any(t:t eq 'WindowsAzureActiveDirectoryOnPremApp')"
               "&$select=id,appId,displayName,tags,servicePrincipalNames,homepage,replyUrls,logoutUrl (every page), "
               "then for each: GET /beta/applications(appId='<appId>')?$select=id,appId,displayName,"
               "onPremisesPublishing (Application Proxy settings exist in beta only)",
               "list of the tenant's Application Proxy service principals {id, appId, displayName, tags (list), "
               "servicePrincipalNames (list), homepage, replyUrls (list), logoutUrl, application: {id, appId, "
               "displayName, onPremisesPublishing: {externalUrl, internalUrl, applicationType, "
               "externalAuthenticationType, isOnPremPublishingEnabled, ...} | null} | null (no application object "
               "in the tenant)}; the Hybrid Agent registers one whose externalUrl is "
               "https://<GUID>.resource.mailboxmigration.his.msappproxy.net/", scope="tenant"),
    SourceSpec("graph.organization",
               "GET /v1.0/organization?$select=id,displayName,verifiedDomains,onPremisesSyncEnabled,"
               "onPremisesLastSyncDateTime",
               "list of {id, displayName, verifiedDomains (list of {name, type, isDefault, isInitial}), "
               "onPremisesSyncEnabled, onPremisesLastSyncDateTime}", scope="tenant"),
    SourceSpec("graph.domains", "GET /v1.0/domains?$select=id,authenticationType,isVerified,isDefault",
               "list of {id, authenticationType ('Managed'|'Federated'), isVerified, isDefault}", scope="tenant"),
    SourceSpec("graph.users",
               "GET /v1.0/users?$select=userPrincipalName,mail,onPremisesSyncEnabled,onPremisesSecurityIdentifier "
               "(every page)",
               "list of {userPrincipalName, mail, onPremisesSyncEnabled, onPremisesSecurityIdentifier}", scope="tenant"),
    SourceSpec("graph.security_defaults", "GET /v1.0/policies/identitySecurityDefaultsEnforcementPolicy",
               "{id, isEnabled}", scope="tenant"),
    SourceSpec("graph.conditional_access_policies", "GET /v1.0/identity/conditionalAccess/policies",
               "list of Graph conditionalAccessPolicy objects: {id, displayName, state ('enabled', 'disabled', "
               "'enabledForReportingButNotEnforced'), conditions: {clientAppTypes, applications: {includeApplications, "
               "excludeApplications}, users: {includeUsers, excludeUsers, includeGroups, excludeGroups, includeRoles, "
               "excludeRoles}}, grantControls: {operator, builtInControls} | null}", scope="tenant"),
    SourceSpec("graph.subscribed_skus", "GET /v1.0/subscribedSkus",
               "list of {skuId, skuPartNumber, capabilityStatus, servicePlans (list of {servicePlanName, "
               "provisioningStatus})}", scope="tenant"),
    # ----------------------------------------------------------------------------------- outside-in probes
    SourceSpec("probe.targets",
               "host names from the InternalUrl/ExternalUrl of the MAPI, EWS, OAB, Autodiscover and ActiveSync "
               "virtual directories, every AutodiscoverServiceInternalUri and probes.hosts (no I/O)",
               "{targets: list of {host, port, origins (list of 'source@scope Property' or 'probes.hosts'), "
               "autodiscover (Autodiscover v2 asked here)}, unknown: list of {source, reason} (sources that failed "
               "or are missing, so their hosts were not probed; each also leaves probe.bearer, probe.tls and, for "
               "Autodiscover, probe.autodiscover_v2 results with status error and scope 'hosts of <source>'), "
               "ignored: list of {origin, value} (values that are not an http(s) URL)}"),
    SourceSpec("probe.bearer",
               "anonymous GET <url> with an empty 'Authorization: Bearer' header, for /mapi/, /EWS/Exchange.asmx, "
               "/OAB/, /Autodiscover/Autodiscover.xml and /Microsoft-Server-ActiveSync on every host",
               "{url, host, path, protocol ('MAPI'|'EWS'|'OAB'|'Autodiscover'|'ActiveSync'), address, status, "
               "www_authenticate (list of raw challenges), bearer ({client_id, trusted_issuers (list), token_types, "
               "authorization_uri, error} | null), x_ms_diagnostics (str|null), x_feserver (str|null), "
               "request_id (str|null), location (str|null)}; scope = the URL, or '<url> via <address>' when "
               "the host has several nodes (--resolve/--connect-to; ':<port>' added only when two nodes share an "
               "address)", scope="url"),
    SourceSpec("probe.autodiscover_v2",
               "anonymous GET https://<host>/autodiscover/autodiscover.json?Email=<smtp>&Protocol=<ActiveSync|EWS>"
               "&RedirectCount=1 on every Autodiscover host",
               "{url, host, protocol ('ActiveSync'|'EWS'), address, status, returned_url (str|null), returned_host "
               "(str|null), location (str|null)}; scope = https://<host>/autodiscover/autodiscover.json?Protocol=<p> "
               "(plus ' via <address>' per node)", scope="url"),
    SourceSpec("probe.tls", "one TLS handshake per version (1.0, 1.1, 1.2, 1.3) to host:port, then the certificate",
               "{host, port, address, versions: {'TLSv1.0'|'TLSv1.1'|'TLSv1.2'|'TLSv1.3': true (accepted) | false "
               "(refused) | null (unknown: timed out, or this machine cannot offer it)}, version_errors: {version: "
               "why it is null}, certificate: {subject, issuer, not_before, not_after, dns_names (list: SAN DNS "
               "names, else the CN), thumbprint, chain_verified (trust and dates, not names; null when the "
               "verifying handshake did not complete), verify_error (str|null)} | null (no version accepted), "
               "names_in_scope (list of host names that must be covered: the probed host, each name having its own "
               "handshake with its own SNI)}; scope = host:port (plus "
               "' via <address>' per node)",
               scope="endpoint"),
    # ------------------------------------------------------------------------ Exchange's own logs (client impact)
    SourceSpec("logs.httpproxy",
               "Exchange's HttpProxy logs (<install path>\\Logging\\HttpProxy\\<Protocol>\\HttpProxy_*.LOG): the files "
               "gathered by Collect-HmaReadiness.ps1 or any folder of them (hma-check import), or per server over WinRM "
               "(the logs: section): Get-ChildItem, then Import-Csv | Where-Object | Group-Object per day and protocol",
               "{granularity ('request': offline, every line read; 'day': live, first and last seen to the log "
               "file's day), window: {first, last}, files, lines, requests, malformed: {lines, examples (list of "
               "{file, line, reason})}, pseudonymised (user names are a keyed hash), servers (list of {server "
               "(ServerHostName or the server's Name), status ('ok'|'error'), error, requests, first_seen, last_seen, "
               "note}), clients (list of {Protocol, AuthenticationType, authenticated (IsAuthenticated), "
               "modern_authentication (Bearer or OAuth), family, version, client, modern ('yes'|'registry'|"
               "'profile'|'no'|'unknown'|'n/a', docs/clients.md), modern_note, requests, users, people and "
               "applications (lists of {user, requests, last_seen}: service accounts and applications listed apart), "
               "exchange_accounts (HealthMailbox monitoring accounts, counted only), first_seen, last_seen}), "
               "user_agents (top 25: {UserAgent, client, family, modern, requests}), daily (list of {date, Protocol, "
               "AuthenticationType, authenticated, modern_authentication, exchange_monitoring, requests}), untracked: {user_agents, "
               "combinations, user_pairs} (lines beyond the memory bounds, counted but not itemised)}; ClientIpAddress and AnchorMailbox are never read"),
)

# The vendor properties each source keeps (Exchange and OS objects, shaped by hma_check.collect.exchange.objects) or
# asks Graph for ($select), verbatim and declared once: the collectors read them from here, and
# tests/contract/test_sources.py checks the shapes above (so docs/sources.md), the Graph requests and the offline
# collection script (Collect-HmaReadiness.ps1) against this table.
_VDIR: tuple[str, ...] = ("Server", "Identity", "Name", "InternalUrl", "ExternalUrl", "InternalAuthenticationMethods",
                          "ExternalAuthenticationMethods")
PROPERTIES: dict[str, tuple[str, ...]] = {
    "exchange.servers": ("Name", "Fqdn", "AdminDisplayVersion", "ServerRole", "Site", "Edition", "IsEdgeServer",
                         "IsClientAccessServer", "IsMailboxServer", "InternetWebProxy"),
    "exchange.organization_config": ("Name", "OAuth2ClientProfileEnabled", "MapiHttpEnabled", "EnableDownloadDomains",
                                     "DefaultAuthenticationPolicy", "PerTenantSwitchToESTSEnabled"),
    "exchange.auth_servers": ("Name", "Type", "Enabled", "IsDefaultAuthorizationEndpoint", "Realm", "DomainName",
                              "AuthMetadataUrl", "ApplicationIdentifier", "IssuerIdentifier", "TokenIssuingEndpoint"),
    "exchange.partner_applications": ("Name", "ApplicationIdentifier", "Enabled", "UseAuthServer", "AuthMetadataUrl",
                                      "Realm", "LinkedAccount"),
    "exchange.auth_config": ("CurrentCertificateThumbprint", "PreviousCertificateThumbprint",
                             "NextCertificateThumbprint", "NextCertificateEffectiveDate", "ServiceName", "Realm"),
    "exchange.hybrid_configuration": ("OnPremisesSmartHost", "Domains", "Features", "TlsCertificateName",
                                      "ClientAccessServers", "SendingTransportServers", "ReceivingTransportServers",
                                      "EdgeTransportServers", "ServiceInstance"),
    "exchange.intra_organization_connectors": ("Name", "Enabled", "DiscoveryEndpoint", "TargetAddressDomains",
                                               "TargetSharingEpr"),
    "exchange.setting_overrides": ("Name", "ComponentName", "SectionName", "Parameters", "Server", "Status",
                                   "MinVersion", "MaxVersion", "Reason"),
    "exchange.client_access_services": ("Name", "AutodiscoverServiceInternalUri"),
    "exchange.accepted_domains": ("Name", "DomainName", "DomainType", "Default"),
    "exchange.mailboxes": ("Name", "UserPrincipalName", "PrimarySmtpAddress", "RecipientTypeDetails", "Sid"),
    "exchange.admin_users": ("Name", "UserPrincipalName", "SamAccountName", "Sid", "RecipientTypeDetails"),
    "exchange.authentication_policies": ("Name", "Identity", "DistinguishedName",
                                         *(f"Block{kind}Auth{protocol}" for kind in ("Legacy", "Modern")
                                           for protocol in ("ActiveSync", "Autodiscover", "Imap", "Mapi",
                                                            "OfflineAddressBook", "Pop", "Rpc", "WebServices"))),
    "exchange.user_authentication_policies": ("Name", "UserPrincipalName", "RecipientTypeDetails",
                                              "AuthenticationPolicy"),
    "exchange.cas_mailboxes_mapi_disabled": ("Name", "PrimarySmtpAddress", "MapiHttpEnabled"),
    "exchange.activesync_organization_settings": ("DefaultAccessLevel",),
    "exchange.activesync_device_access_rules": ("Name", "Characteristic", "QueryString", "AccessLevel"),
    "exchange.mapi_virtual_directories": _VDIR + ("IISAuthenticationMethods",),
    "exchange.web_services_virtual_directories": _VDIR + ("OAuthAuthentication", "BasicAuthentication",
                                                          "WindowsAuthentication", "WSSecurityAuthentication"),
    "exchange.oab_virtual_directories": _VDIR + ("OAuthAuthentication", "BasicAuthentication",
                                                 "WindowsAuthentication"),
    "exchange.autodiscover_virtual_directories": _VDIR + ("OAuthAuthentication", "BasicAuthentication",
                                                          "WindowsAuthentication", "WSSecurityAuthentication"),
    "exchange.activesync_virtual_directories": _VDIR + ("BasicAuthEnabled", "WindowsAuthEnabled"),
    "exchange.owa_virtual_directories": _VDIR + ("OAuthAuthentication", "BasicAuthentication", "FormsAuthentication",
                                                 "AdfsAuthentication", "DigestAuthentication",
                                                 "WindowsAuthentication"),
    "exchange.ecp_virtual_directories": _VDIR + ("OAuthAuthentication", "BasicAuthentication", "FormsAuthentication",
                                                 "AdfsAuthentication", "DigestAuthentication",
                                                 "WindowsAuthentication"),
    "exchange.outlook_anywhere": ("Server", "Identity", "InternalHostname", "ExternalHostname", "SSLOffloading",
                                  "InternalClientsRequireSsl", "ExternalClientsRequireSsl",
                                  "InternalClientAuthenticationMethod", "ExternalClientAuthenticationMethod",
                                  "IISAuthenticationMethods"),
    "os.tls_registry": ("Protocols", "NETFramework", "NETFrameworkWow6432Node"),
    "os.exsetup_version": ("FileVersion", "Path"),
    "os.operating_system": ("Caption", "Version", "BuildNumber"),
    "os.auth_certificate": ("Thumbprint", "Subject", "NotAfter", "HasPrivateKey"),
    "os.next_auth_certificate": ("Thumbprint", "Subject", "NotBefore", "NotAfter", "HasPrivateKey"),
    "os.iis_ssl_flags": ("/mapi", "/EWS", "/Autodiscover", "/OAB", "/Microsoft-Server-ActiveSync"),
}
PROPERTIES.update({
    "graph.exo_service_principal": ("id", "appId", "displayName", "servicePrincipalNames", "replyUrls", "keyCredentials"),
    "graph.organization": ("id", "displayName", "verifiedDomains", "onPremisesSyncEnabled", "onPremisesLastSyncDateTime"),
    "graph.domains": ("id", "authenticationType", "isVerified", "isDefault"),
    "graph.users": ("userPrincipalName", "mail", "onPremisesSyncEnabled", "onPremisesSecurityIdentifier"),
})

BY_NAME: dict[str, SourceSpec] = {spec.name: spec for spec in SOURCES}
NAMESPACES = tuple(sorted({spec.collector for spec in SOURCES}))


def is_known(name: str) -> bool:
    return name in BY_NAME


def markdown() -> str:
    """docs/sources.md, generated from this registry."""
    lines = [
        "# Evidence sources: the contract between collectors and checks",
        "",
        "Generated from `hma_check/contract/sources.py` by `python -m hma_check.contract.sources > docs/sources.md`; do not edit by hand.",
        "",
        *(line.strip() for line in (__doc__ or "").splitlines()[2:]),
        "",
        "Scopes:",
        "",
    ]
    for scope, meaning in SCOPES.items():
        lines.append(f"- `{scope or 'none'}`: {meaning}")
    for namespace in NAMESPACES:
        lines += ["", f"## {namespace}", "", "| source | scope | filled by | data |", "|---|---|---|---|"]
        for spec in SOURCES:
            if spec.collector == namespace:
                cells = [f"`{spec.name}`", _scope_cell(spec), _cell(spec.filled_by), _cell(spec.shape)]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _scope_cell(spec: SourceSpec) -> str:
    """The scope, and for a per-server source which servers must have it."""
    if spec.servers is not None:
        covered = SERVER_RULES[spec.servers][0]
        more = "; at least one object each" if spec.one_or_more else ""
        return _cell(f"server: {covered}{more}")
    if spec.minimum_build is not None:
        return _cell(f"- (exists from {spec.minimum_release}, {spec.minimum_build})")
    return spec.scope or "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    print(markdown(), end="")
