"""Which Exchange (and OS) object type fills which source, and the contract's data shape for one cmdlet's objects."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Iterable

from hma_check.collect.certificates import CertificateError, certificate_from_der
from hma_check.collect.clixml import ClixmlObject

_SC = "Microsoft.Exchange.Data.Directory.SystemConfiguration."
_MGMT = "Microsoft.Exchange.Data.Directory.Management."

# The most specific type name each cmdlet returns (Exchange 2013 to SE). Matching uses every type name of an object,
# so a subclass still finds its source. Type names of the vdirs: ADMobileVirtualDirectory is ActiveSync,
# ADRpcHttpVirtualDirectory is Outlook Anywhere (Exchange's own class names).
SOURCE_BY_TYPE: dict[str, str] = {
    _MGMT + "ExchangeServer": "exchange.servers",
    _MGMT + "OrganizationConfig": "exchange.organization_config",
    _SC + "AuthServer": "exchange.auth_servers",
    _SC + "PartnerApplication": "exchange.partner_applications",
    _SC + "AuthConfig": "exchange.auth_config",
    _SC + "HybridConfiguration": "exchange.hybrid_configuration",
    _SC + "IntraOrganizationConnector": "exchange.intra_organization_connectors",
    _SC + "ConfigurationSettings.SettingOverride": "exchange.setting_overrides",
    _MGMT + "ClientAccessService": "exchange.client_access_services",
    _MGMT + "ClientAccessServer": "exchange.client_access_services",  # Exchange 2013's Get-ClientAccessServer
    _SC + "AcceptedDomain": "exchange.accepted_domains",
    _MGMT + "Mailbox": "exchange.mailboxes",
    _MGMT + "User": "exchange.admin_users",
    _SC + "AuthPolicy": "exchange.authentication_policies",
    _MGMT + "CASMailbox": "exchange.cas_mailboxes_mapi_disabled",
    _SC + "ActiveSyncOrganizationSettings": "exchange.activesync_organization_settings",
    _SC + "ActiveSyncDeviceAccessRule": "exchange.activesync_device_access_rules",
    _SC + "ADMapiVirtualDirectory": "exchange.mapi_virtual_directories",
    _SC + "ADWebServicesVirtualDirectory": "exchange.web_services_virtual_directories",
    _SC + "ADOabVirtualDirectory": "exchange.oab_virtual_directories",
    _SC + "ADAutodiscoverVirtualDirectory": "exchange.autodiscover_virtual_directories",
    _SC + "ADMobileVirtualDirectory": "exchange.activesync_virtual_directories",
    _SC + "ADOwaVirtualDirectory": "exchange.owa_virtual_directories",
    _SC + "ADEcpVirtualDirectory": "exchange.ecp_virtual_directories",
    _SC + "ADRpcHttpVirtualDirectory": "exchange.outlook_anywhere",
    "Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate": "exchange.exchange_certificates",
    # Server OS: ExSetup.exe's FileVersionInfo, the CIM operating system, and the records the collection script builds
    # itself (PSTypeName HmaCheck.*), since the registry and the certificate store have no Exchange type to match.
    "System.Diagnostics.FileVersionInfo": "os.exsetup_version",
    "Microsoft.Management.Infrastructure.CimInstance#root/cimv2/Win32_OperatingSystem": "os.operating_system",
    "HmaCheck.TlsRegistry": "os.tls_registry",
    "HmaCheck.ExSetupVersion": "os.exsetup_version",
    "HmaCheck.OperatingSystem": "os.operating_system",
    "HmaCheck.AuthCertificate": "os.auth_certificate",
}

_VDIR = ("Server", "Identity", "Name", "InternalUrl", "ExternalUrl", "InternalAuthenticationMethods",
         "ExternalAuthenticationMethods")

# The properties each source keeps, verbatim from the contract (hma_check/contract/sources.py; a test keeps them in step).
FIELDS: dict[str, tuple[str, ...]] = {
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
    "exchange.mailboxes": ("Name", "UserPrincipalName", "PrimarySmtpAddress", "RecipientTypeDetails"),
    "exchange.admin_users": ("Name", "UserPrincipalName", "SamAccountName", "Sid", "RecipientTypeDetails"),
    "exchange.authentication_policies": ("Name", "BlockLegacyAuthActiveSync", "BlockLegacyAuthAutodiscover",
                                         "BlockLegacyAuthImap", "BlockLegacyAuthMapi",
                                         "BlockLegacyAuthOfflineAddressBook", "BlockLegacyAuthPop",
                                         "BlockLegacyAuthRpc", "BlockLegacyAuthWebServices"),
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
}

# Sources whose data is one object (or null) rather than a list.
SINGLE_OBJECT = frozenset({
    "exchange.organization_config", "exchange.auth_config", "exchange.hybrid_configuration",
    "exchange.activesync_organization_settings",
    "os.tls_registry", "os.exsetup_version", "os.operating_system", "os.auth_certificate",
})
# Single-object sources where "no object" is a real answer: Get-HybridConfiguration returns nothing when the
# organisation never ran the Hybrid Configuration Wizard; the collection script reports a missing auth certificate.
NULL_WHEN_EMPTY = frozenset({"exchange.hybrid_configuration", "os.auth_certificate"})
# An Edge Transport server has no client access virtual directories, serves no HMA client and sits outside the
# domain: no per-server exchange source is read for it and its os sources are skipped with this reason, by the live
# collectors and by offline import alike. The topology checks still assess it from exchange.servers.
EDGE_OS_SKIPPED = "Edge Transport server: outside the domain and not part of HMA; its OS is not read"
# Per-server sources whose objects carry the server they belong to in their Server property.
SERVER_PROPERTY_SOURCES = frozenset(name for name, fields in FIELDS.items() if fields[:1] == ("Server",))


class ShapeError(ValueError):
    """Objects that cannot be the contract's data for the source (none where one is required, several, no RawData)."""


def type_key(type_name: str) -> str:
    """The type name to match: Select-Object output reads 'Selected.<type>' (possibly 'Selected.Deserialized.<type>')."""
    for prefix in ("Selected.", "Deserialized."):
        if type_name.startswith(prefix):
            type_name = type_name[len(prefix):]
    return type_name


def source_for(obj: ClixmlObject) -> str | None:
    """The source an object belongs to, by its type names; None when it is not an object hma-check reads."""
    for name in obj.type_names:
        source = SOURCE_BY_TYPE.get(type_key(name))
        if source is not None:
            return source
    return None


def shape(source_name: str, objects: Iterable[ClixmlObject]) -> Any:
    """The contract's data for one cmdlet call's objects: a list, one object, or null where the contract allows.

    Only the contract's properties are kept; one the object does not have is left out (never defaulted), so a check
    that needs it cannot pass.
    """
    objects = list(objects)
    if source_name == "exchange.exchange_certificates":
        return [certificate_record(obj) for obj in objects]
    fields = FIELDS.get(source_name)
    if fields is None:
        raise ShapeError(f"{source_name} is not an Exchange or OS source")
    if source_name not in SINGLE_OBJECT:
        return [_pick(source_name, obj, fields) for obj in objects]
    if not objects:
        if source_name in NULL_WHEN_EMPTY:
            return None
        raise ShapeError(f"no object came back for {source_name}; it has exactly one")
    if len(objects) > 1:
        raise ShapeError(f"{len(objects)} objects came back for {source_name}; it has exactly one")
    return _pick(source_name, objects[0], fields)


def _pick(source_name: str, obj: ClixmlObject, fields: tuple[str, ...]) -> dict[str, Any] | None:
    if source_name == "os.auth_certificate" and obj.get("InStore") is False:
        return None  # the script looked the thumbprint up and the store does not hold it
    if source_name == "os.exsetup_version" and "Path" not in obj and "FileName" in obj:
        # FileVersionInfo calls it FileName; Get-Command's ApplicationInfo (and the contract) call it Path.
        return {"FileVersion": obj.get("FileVersion"), "Path": obj.get("FileName")}
    return {name: obj.get(name) for name in fields if name in obj}


def certificate_record(obj: ClixmlObject) -> dict[str, Any]:
    """The contract's certificate record from an object's RawData: an ExchangeCertificate, or the X509Certificate2
    the OS collector reads from a server's store (a remote session sends certificates as RawData only)."""
    raw = obj.get("RawData")
    if not isinstance(raw, str) or not raw:
        raise ShapeError(f"certificate {(obj.to_string or '')[:60]!r} has no RawData")
    try:
        return certificate_from_der(decode_base64(raw))
    except CertificateError as exc:
        raise ShapeError(str(exc)) from None


def decode_base64(text: str) -> bytes:
    """A binary value (<BA>, RawData, a registry Blob) as bytes; ShapeError when it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ShapeError(f"binary value is not base64: {exc}") from None
