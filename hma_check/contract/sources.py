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
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPES = {
    None: "organisation-wide: one result",
    "server": "one result per Exchange server (scope = the server's Name)",
    "tenant": "one result per Entra tenant (scope = the tenant id)",
    "url": "one result per probed URL (scope = the URL)",
    "endpoint": "one result per probed host:port (scope = host:port)",
}


@dataclass(frozen=True)
class SourceSpec:
    name: str
    filled_by: str
    shape: str
    scope: str | None = None

    @property
    def collector(self) -> str:
        return self.name.split(".", 1)[0]


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
               "list of {Name, UserPrincipalName, PrimarySmtpAddress, RecipientTypeDetails}"),
    SourceSpec("exchange.admin_users",
               "Get-RoleGroupMember -Identity 'Organization Management', then Get-User -Identity <member>",
               "list of {Name, UserPrincipalName, SamAccountName, Sid, RecipientTypeDetails}"),
    SourceSpec("exchange.authentication_policies", "Get-AuthenticationPolicy (Exchange 2019 CU2 and later)",
               "list of {Name, BlockLegacyAuthActiveSync, BlockLegacyAuthAutodiscover, BlockLegacyAuthImap, "
               "BlockLegacyAuthMapi, BlockLegacyAuthOfflineAddressBook, BlockLegacyAuthPop, BlockLegacyAuthRpc, "
               "BlockLegacyAuthWebServices}"),
    SourceSpec("exchange.cas_mailboxes_mapi_disabled",
               "Get-CASMailbox -ResultSize Unlimited -Filter \"MapiHttpEnabled -eq $false\"",
               "list of {Name, PrimarySmtpAddress, MapiHttpEnabled}"),
    SourceSpec("exchange.activesync_organization_settings", "Get-ActiveSyncOrganizationSettings",
               "{DefaultAccessLevel ('Allow', 'Block', 'Quarantine')}"),
    SourceSpec("exchange.activesync_device_access_rules", "Get-ActiveSyncDeviceAccessRule",
               "list of {Name, Characteristic, QueryString, AccessLevel}"),
    # ---------------------------------------------------------------------------------------- Exchange, per server
    SourceSpec("exchange.mapi_virtual_directories", "Get-MapiVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, IISAuthenticationMethods (list)}}", scope="server"),
    SourceSpec("exchange.web_services_virtual_directories", "Get-WebServicesVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, WindowsAuthentication, "
               "WSSecurityAuthentication}", scope="server"),
    SourceSpec("exchange.oab_virtual_directories", "Get-OabVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, WindowsAuthentication}}",
               scope="server"),
    SourceSpec("exchange.autodiscover_virtual_directories", "Get-AutodiscoverVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, WindowsAuthentication, "
               "WSSecurityAuthentication}", scope="server"),
    SourceSpec("exchange.activesync_virtual_directories", "Get-ActiveSyncVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, BasicAuthEnabled, WindowsAuthEnabled}}", scope="server"),
    SourceSpec("exchange.owa_virtual_directories", "Get-OwaVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, FormsAuthentication, "
               "AdfsAuthentication, DigestAuthentication, WindowsAuthentication}", scope="server"),
    SourceSpec("exchange.ecp_virtual_directories", "Get-EcpVirtualDirectory -Server <server>",
               f"list of {{{_VDIR_COMMON}, OAuthAuthentication, BasicAuthentication, FormsAuthentication, "
               "AdfsAuthentication, DigestAuthentication, WindowsAuthentication}", scope="server"),
    SourceSpec("exchange.outlook_anywhere", "Get-OutlookAnywhere -Server <server>",
               "list of {Server, Identity, InternalHostname, ExternalHostname, SSLOffloading, InternalClientsRequireSsl, "
               "ExternalClientsRequireSsl, InternalClientAuthenticationMethod, ExternalClientAuthenticationMethod, "
               "IISAuthenticationMethods (list)}", scope="server"),
    SourceSpec("exchange.exchange_certificates", "Get-ExchangeCertificate -Server <server>",
               "list of certificates decoded from RawData: {Thumbprint (upper-case hex SHA-1 of the DER), Subject, "
               "Issuer, SerialNumber, NotBefore, NotAfter, DnsNameList (list: SAN DNS names, else the CN), "
               "IsSelfSigned, HasServerAuthEku, SignatureAlgorithm, PublicKeySize, RawData (base64 DER)}",
               scope="server"),
    # ------------------------------------------------------------------------------- server OS, per server (WinRM)
    SourceSpec("os.tls_registry",
               "Get-ItemProperty on HKLM:\\SYSTEM\\CurrentControlSet\\Control\\SecurityProviders\\SCHANNEL\\Protocols\\"
               "TLS 1.0..1.3\\{Server,Client} and HKLM:\\SOFTWARE\\[Wow6432Node\\]Microsoft\\.NETFramework\\"
               "{v2.0.50727,v4.0.30319}",
               "{Protocols: {'TLS 1.0'|'TLS 1.1'|'TLS 1.2'|'TLS 1.3': {Server: {Enabled, DisabledByDefault}, "
               "Client: {Enabled, DisabledByDefault}}}, NETFramework: {'v2.0.50727'|'v4.0.30319': "
               "{SystemDefaultTlsVersions, SchUseStrongCrypto}}, NETFrameworkWow6432Node: {same}}; every value is the "
               "DWORD as read (0xffffffff reads as -1) or null when the value or key is absent", scope="server"),
    SourceSpec("os.exsetup_version", "Get-Command -Name ExSetup.exe -CommandType Application (its FileVersionInfo)",
               "{FileVersion ('15.02.1544.011': the exact build, security update included), Path}", scope="server"),
    SourceSpec("os.operating_system", "Get-CimInstance -ClassName Win32_OperatingSystem",
               "{Caption, Version ('10.0.20348'), BuildNumber}", scope="server"),
    SourceSpec("os.auth_certificate",
               "Get-ChildItem -Path Cert:\\LocalMachine\\My\\<CurrentCertificateThumbprint>; Get-ItemProperty -Path "
               "HKLM:\\SOFTWARE\\Microsoft\\SystemCertificates\\MY\\Certificates\\<thumbprint> -Name Blob",
               "{Thumbprint, Subject, NotAfter, HasPrivateKey (true|false; null when the store's registry Blob is "
               "not there to tell)} or null when the certificate is not in the store", scope="server"),
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
               "request_id (str|null), location (str|null)}; scope = the URL, or '<url> via <address>:<port>' when "
               "the host has several nodes (--resolve/--connect-to)", scope="url"),
    SourceSpec("probe.autodiscover_v2",
               "anonymous GET https://<host>/autodiscover/autodiscover.json?Email=<smtp>&Protocol=<ActiveSync|EWS>"
               "&RedirectCount=1 on every Autodiscover host",
               "{url, host, protocol ('ActiveSync'|'EWS'), address, status, returned_url (str|null), returned_host "
               "(str|null), location (str|null)}; scope = https://<host>/autodiscover/autodiscover.json?Protocol=<p> "
               "(plus ' via <address>:<port>' per node)", scope="url"),
    SourceSpec("probe.tls", "one TLS handshake per version (1.0, 1.1, 1.2, 1.3) to host:port, then the certificate",
               "{host, port, address, versions: {'TLSv1.0'|'TLSv1.1'|'TLSv1.2'|'TLSv1.3': true (accepted) | false "
               "(refused) | null (unknown: timed out, or this machine cannot offer it)}, version_errors: {version: "
               "why it is null}, certificate: {subject, issuer, not_before, not_after, dns_names (list: SAN DNS "
               "names, else the CN), thumbprint, chain_verified (trust and dates, not names; null when the "
               "verifying handshake did not complete), verify_error (str|null)} | null (no version accepted), "
               "names_in_scope (list of host names that must be covered: the probed host, each name having its own "
               "handshake with its own SNI)}; scope = host:port (plus "
               "' via <address>:<port>' per node)",
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
                cells = [f"`{spec.name}`", spec.scope or "-", _cell(spec.filled_by), _cell(spec.shape)]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":
    print(markdown(), end="")
