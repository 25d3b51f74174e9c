"""The Exchange object kinds the lab serves: type names, the properties a scenario may set, and their wire types.

Property names are Microsoft's, verbatim. Wire types follow a remote session at depth 1 (exchange-objects.md 5.1):
``s`` string (ADObjectId, enums and versions are strings too), ``b`` bool, ``i`` int, ``mv`` MultiValuedProperty of
strings, ``uri`` <URI> or Nil, ``dt`` <DT> or Nil, ``g`` <G>. Objects for which no real capture exists (MAPI, OAB, Autodiscover,
ActiveSync and ECP virtual directories, Outlook Anywhere, AuthServer, IntraOrganizationConnector, ClientAccessService)
are synthetic: modelled on the captured OWA/EWS virtual directories and PartnerApplication.
"""

from __future__ import annotations

from dataclasses import dataclass

from hma_lab.psvalues import AD_CONFIGURATION, AD_PRESENTATION

SYSTEM_CONFIGURATION = "Microsoft.Exchange.Data.Directory.SystemConfiguration"
_VDIR_TAIL = [f"{SYSTEM_CONFIGURATION}.ADExchangeServiceVirtualDirectory", f"{SYSTEM_CONFIGURATION}.ADVirtualDirectory",
              *AD_CONFIGURATION]
_AUTH_METHOD = f"{SYSTEM_CONFIGURATION}.AuthenticationMethod, Microsoft.Exchange.Data.Directory"


@dataclass(frozen=True)
class Kind:
    name: str
    type_names: tuple[str, ...]
    properties: dict[str, str]
    mv_item_types: dict[str, str] | None = None   # MultiValuedProperty item type per property (default System.String)


def _kind(name: str, type_names: list[str], properties: str, mv_item_types: dict[str, str] | None = None) -> Kind:
    props = {}
    for item in properties.split():
        prop, _, code = item.partition(":")
        props[prop] = code or "s"
    return Kind(name, tuple(type_names), props, mv_item_types)


_AD_COMMON = ("AdminDisplayName ExchangeVersion DistinguishedName Identity Guid:g ObjectCategory ObjectClass:mv "
              "WhenChanged:dt WhenCreated:dt WhenChangedUTC:dt WhenCreatedUTC:dt OrganizationId Id OriginatingServer "
              "IsValid:b ObjectState")
_VDIR_COMMON = ("Server Name InternalUrl:uri ExternalUrl:uri InternalAuthenticationMethods:mv "
                "ExternalAuthenticationMethods:mv MetabasePath Path ExtendedProtectionTokenChecking "
                "ExtendedProtectionFlags:mv ExtendedProtectionSPNList:mv AdminDisplayVersion " + _AD_COMMON)
_VDIR_MV = {"InternalAuthenticationMethods": _AUTH_METHOD, "ExternalAuthenticationMethods": _AUTH_METHOD,
            "IISAuthenticationMethods": _AUTH_METHOD}

KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    _kind("ExchangeServer", ["Microsoft.Exchange.Data.Directory.Management.ExchangeServer", *AD_PRESENTATION],
          "Name DataPath Domain Edition ExchangeLegacyDN Fqdn InternetWebProxy:uri IsHubTransportServer:b "
          "IsClientAccessServer:b IsExchange2007OrLater:b IsEdgeServer:b IsMailboxServer:b IsE14OrLater:b "
          "IsE15OrLater:b IsFrontendTransportServer:b NetworkAddress:mv OrganizationalUnit AdminDisplayVersion Site "
          "ServerRole ProductID IsExchangeTrialEdition:b " + _AD_COMMON),
    _kind("OrganizationConfig", ["Microsoft.Exchange.Data.Directory.Management.OrganizationConfig", *AD_PRESENTATION],
          "Name DisplayName OAuth2ClientProfileEnabled:b PerTenantSwitchToESTSEnabled:b MapiHttpEnabled:b "
          "EnableDownloadDomains:b DefaultAuthenticationPolicy HybridConfigurationStatus EwsEnabled:b "
          "ActivityBasedAuthenticationTimeoutEnabled:b CustomerFeedbackEnabled:b IsMixedMode:b ObjectVersion:i "
          "AdminDisplayVersion " + _AD_COMMON),
    _kind("AuthServer", [f"{SYSTEM_CONFIGURATION}.AuthServer", *AD_CONFIGURATION],
          "Name IssuerIdentifier TokenIssuingEndpoint AuthorizationEndpoint ApplicationIdentifier CertificateStrings:mv "
          "AuthMetadataUrl Type Realm Enabled:b IsDefaultAuthorizationEndpoint:b DomainName:mv "
          "RequireTokenEncryption:b " + _AD_COMMON),
    _kind("PartnerApplication", [f"{SYSTEM_CONFIGURATION}.PartnerApplication", *AD_CONFIGURATION],
          "Name Enabled:b ApplicationIdentifier CertificateStrings:mv AuthMetadataUrl Realm UseAuthServer:b "
          "AcceptSecurityIdentifierInformation:b LinkedAccount IssuerIdentifier AccountType AppOnlyPermissions:mv "
          "ActAsPermissions:mv " + _AD_COMMON),
    _kind("AuthConfig", [f"{SYSTEM_CONFIGURATION}.AuthConfig", *AD_CONFIGURATION],
          "Name CurrentCertificateThumbprint PreviousCertificateThumbprint NextCertificateThumbprint "
          "NextCertificateEffectiveDate:dt ServiceName Realm IssuerIdentifier " + _AD_COMMON),
    _kind("HybridConfiguration", [f"{SYSTEM_CONFIGURATION}.HybridConfiguration", *AD_CONFIGURATION],
          "Name ClientAccessServers:mv EdgeTransportServers:mv ReceivingTransportServers:mv SendingTransportServers:mv "
          "OnPremisesSmartHost Domains:mv Features:mv ExternalIPAddresses:mv TlsCertificateName ServiceInstance:i "
          + _AD_COMMON),
    _kind("IntraOrganizationConnector", [f"{SYSTEM_CONFIGURATION}.IntraOrganizationConnector", *AD_CONFIGURATION],
          "Name TargetAddressDomains:mv DiscoveryEndpoint:uri TargetSharingEpr:uri Enabled:b " + _AD_COMMON),
    _kind("SettingOverride", [f"{SYSTEM_CONFIGURATION}.ConfigurationSettings.SettingOverride", *AD_CONFIGURATION],
          "Name ComponentName SectionName FlightName Parameters:mv Server:mv MinVersion MaxVersion FixVersion Reason "
          "ModifiedBy Status XmlRaw IsFlight:b " + _AD_COMMON),
    _kind("ClientAccessService", ["Microsoft.Exchange.Data.Directory.Management.ClientAccessService",
                                  *AD_PRESENTATION],
          "Name Fqdn AutoDiscoverServiceInternalUri:uri AutoDiscoverSiteScope:mv AutoDiscoverServiceCN "
          + _AD_COMMON),
    _kind("AcceptedDomain", [f"{SYSTEM_CONFIGURATION}.AcceptedDomain", *AD_CONFIGURATION],
          "Name DomainName DomainType Default:b " + _AD_COMMON),
    _kind("Mailbox", ["Microsoft.Exchange.Data.Directory.Management.Mailbox",
                      "Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson",
                      "Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient", *AD_PRESENTATION],
          "Name Alias DisplayName UserPrincipalName PrimarySmtpAddress RecipientTypeDetails SamAccountName "
          "Database " + _AD_COMMON),
    _kind("CASMailbox", ["Microsoft.Exchange.Data.Directory.Management.CASMailbox", *AD_PRESENTATION],
          "Name PrimarySmtpAddress MapiHttpEnabled:b EwsEnabled:b ActiveSyncEnabled:b OWAEnabled:b " + _AD_COMMON),
    _kind("User", ["Microsoft.Exchange.Data.Directory.Management.User",
                   "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject", *AD_PRESENTATION[1:]],
          "Name UserPrincipalName SamAccountName Sid RecipientType RecipientTypeDetails DisplayName AuthenticationPolicy "
          + _AD_COMMON),
    _kind("RoleGroupMember", ["Microsoft.Exchange.Data.Directory.Management.ReducedRecipient", *AD_PRESENTATION],
          "Name DisplayName RecipientType RecipientTypeDetails PrimarySmtpAddress " + _AD_COMMON),
    _kind("AuthenticationPolicy", [f"{SYSTEM_CONFIGURATION}.AuthPolicy", *AD_CONFIGURATION],
          "Name BlockLegacyAuthActiveSync:b BlockLegacyAuthAutodiscover:b BlockLegacyAuthImap:b BlockLegacyAuthMapi:b "
          "BlockLegacyAuthOfflineAddressBook:b BlockLegacyAuthPop:b BlockLegacyAuthRpc:b "
          "BlockLegacyAuthWebServices:b " + _AD_COMMON),
    _kind("ActiveSyncOrganizationSettings", [f"{SYSTEM_CONFIGURATION}.ActiveSyncOrganizationSettings",
                                             *AD_CONFIGURATION],
          "Name DefaultAccessLevel UserMailInsert AllowAccessForUnSupportedPlatform:b AdminMailRecipients:mv "
          + _AD_COMMON),
    _kind("ActiveSyncDeviceAccessRule", [f"{SYSTEM_CONFIGURATION}.ActiveSyncDeviceAccessRule", *AD_CONFIGURATION],
          "Name QueryString Characteristic AccessLevel " + _AD_COMMON),
    # ------------------------------------------------------------------------------------ virtual directories
    _kind("mapi", [f"{SYSTEM_CONFIGURATION}.ADMapiVirtualDirectory", *_VDIR_TAIL],
          "IISAuthenticationMethods:mv " + _VDIR_COMMON, _VDIR_MV),
    _kind("ews", [f"{SYSTEM_CONFIGURATION}.ADWebServicesVirtualDirectory", *_VDIR_TAIL],
          "InternalNLBBypassUrl:uri MRSProxyEnabled:b WSSecurityAuthentication:b BasicAuthentication:b "
          "DigestAuthentication:b WindowsAuthentication:b OAuthAuthentication:b AdfsAuthentication:b "
          "CertificateAuthentication:b " + _VDIR_COMMON, _VDIR_MV),
    _kind("oab", [f"{SYSTEM_CONFIGURATION}.ADOabVirtualDirectory", *_VDIR_TAIL],
          "OfflineAddressBooks:mv PollInterval:i RequireSSL:b BasicAuthentication:b WindowsAuthentication:b "
          "OAuthAuthentication:b " + _VDIR_COMMON, _VDIR_MV),
    _kind("autodiscover", [f"{SYSTEM_CONFIGURATION}.ADAutodiscoverVirtualDirectory", *_VDIR_TAIL],
          "WSSecurityAuthentication:b BasicAuthentication:b DigestAuthentication:b WindowsAuthentication:b "
          "OAuthAuthentication:b AdfsAuthentication:b " + _VDIR_COMMON, _VDIR_MV),
    _kind("activesync", [f"{SYSTEM_CONFIGURATION}.ADMobileVirtualDirectory", *_VDIR_TAIL],
          "MobileClientCertificateProvisioningEnabled:b BadItemReportingEnabled:b SendWatsonReport:b "
          "BasicAuthEnabled:b WindowsAuthEnabled:b CompressionEnabled:b ClientCertAuth ActiveSyncServer:uri "
          + _VDIR_COMMON, _VDIR_MV),
    _kind("owa", [f"{SYSTEM_CONFIGURATION}.ADOwaVirtualDirectory", *_VDIR_TAIL],
          "LogonFormat DefaultDomain BasicAuthentication:b WindowsAuthentication:b DigestAuthentication:b "
          "FormsAuthentication:b LiveIdAuthentication:b AdfsAuthentication:b OAuthAuthentication:b "
          "ExternalDownloadHostName InternalDownloadHostName " + _VDIR_COMMON, _VDIR_MV),
    _kind("ecp", [f"{SYSTEM_CONFIGURATION}.ADEcpVirtualDirectory", *_VDIR_TAIL],
          "AdminEnabled:b OwaOptionsEnabled:b BasicAuthentication:b WindowsAuthentication:b DigestAuthentication:b "
          "FormsAuthentication:b LiveIdAuthentication:b AdfsAuthentication:b OAuthAuthentication:b " + _VDIR_COMMON,
          _VDIR_MV),
    _kind("outlook_anywhere", [f"{SYSTEM_CONFIGURATION}.ADRpcHttpVirtualDirectory", *_VDIR_TAIL],
          "SSLOffloading:b ExternalHostname InternalHostname ExternalClientAuthenticationMethod "
          "InternalClientAuthenticationMethod IISAuthenticationMethods:mv XropUrl:uri ExternalClientsRequireSsl:b "
          "InternalClientsRequireSsl:b " + _VDIR_COMMON, _VDIR_MV),
)}

# The virtual directory cmdlets, their object kind and IIS folder (Name is "<folder> (Default Web Site)").
VDIR_CMDLETS: dict[str, tuple[str, str]] = {
    "Get-MapiVirtualDirectory": ("mapi", "mapi"),
    "Get-WebServicesVirtualDirectory": ("ews", "EWS"),
    "Get-OabVirtualDirectory": ("oab", "OAB"),
    "Get-AutodiscoverVirtualDirectory": ("autodiscover", "Autodiscover"),
    "Get-ActiveSyncVirtualDirectory": ("activesync", "Microsoft-Server-ActiveSync"),
    "Get-OwaVirtualDirectory": ("owa", "owa"),
    "Get-EcpVirtualDirectory": ("ecp", "ecp"),
    "Get-OutlookAnywhere": ("outlook_anywhere", "Rpc"),
}
VDIR_KINDS = tuple(kind for kind, _ in VDIR_CMDLETS.values())

# Read from IIS when a virtual directory is read without -ADPropertiesOnly; with it they come back False (the captured
# OWA directory read that way has Basic/Forms in its method lists but every *Authentication boolean False).
IIS_DERIVED = {
    "ews": ("BasicAuthentication", "DigestAuthentication", "WindowsAuthentication", "OAuthAuthentication",
            "AdfsAuthentication", "WSSecurityAuthentication"),
    "oab": ("BasicAuthentication", "WindowsAuthentication", "OAuthAuthentication"),
    "autodiscover": ("BasicAuthentication", "DigestAuthentication", "WindowsAuthentication", "OAuthAuthentication",
                     "AdfsAuthentication", "WSSecurityAuthentication"),
    "activesync": ("BasicAuthEnabled", "WindowsAuthEnabled"),
    "owa": ("BasicAuthentication", "WindowsAuthentication", "DigestAuthentication", "FormsAuthentication",
            "AdfsAuthentication", "OAuthAuthentication"),
    "ecp": ("BasicAuthentication", "WindowsAuthentication", "DigestAuthentication", "FormsAuthentication",
            "AdfsAuthentication", "OAuthAuthentication"),
    "mapi": (),
    "outlook_anywhere": (),
}


def check_value(code: str, value: object) -> str | None:
    """Why ``value`` cannot be a property of wire type ``code``, or None when it can."""
    if code == "b":
        return None if isinstance(value, bool) else "must be true or false"
    if code == "i":
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if value is None:
        return None
    if code == "mv":
        if not isinstance(value, list) or not all(isinstance(item, (str, int, float)) and not isinstance(item, bool)
                                                  for item in value):
            return "must be a list of strings"
        return None
    if code == "dt":
        return None if isinstance(value, str) or hasattr(value, "isoformat") else "must be a date"
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return None
    return "must be a string"
