"""Which Exchange (and OS) object type fills which source, and the contract's data shape for one cmdlet's objects."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Iterable

from hma_check.errors import HmaCheckError
from hma_check.collect.clixml import ClixmlObject
from hma_check.contract.sources import PROPERTIES

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
    # Get-WmiObject's (HealthChecker's Win32_OperatingSystem.xml captures)
    "System.Management.ManagementObject#root\\cimv2\\Win32_OperatingSystem": "os.operating_system",
    "HmaCheck.TlsRegistry": "os.tls_registry",
    "HmaCheck.ExSetupVersion": "os.exsetup_version",
    "HmaCheck.OperatingSystem": "os.operating_system",
    "HmaCheck.AuthCertificate": "os.auth_certificate",
    # Get-User answers both the administrators and the users with a policy of their own: the collection script marks
    # the second (a Select-Object keeps the User type name).
    "HmaCheck.UserAuthenticationPolicy": "exchange.user_authentication_policies",
    "HmaCheck.NextAuthCertificate": "os.next_auth_certificate",
    "HmaCheck.IisApplicationHost": "os.iis_ssl_flags",
}

# The properties each Exchange and OS source keeps: the contract's table (hma_check.contract.sources.PROPERTIES).
FIELDS: dict[str, tuple[str, ...]] = {name: properties for name, properties in PROPERTIES.items()
                                      if name.startswith(("exchange.", "os."))}

# Sources whose data is one object (or null) rather than a list.
SINGLE_OBJECT = frozenset({
    "exchange.organization_config", "exchange.auth_config", "exchange.hybrid_configuration",
    "exchange.activesync_organization_settings",
    "os.tls_registry", "os.exsetup_version", "os.operating_system", "os.auth_certificate", "os.next_auth_certificate",
    "os.iis_ssl_flags",
})
# Single-object sources where "no object" is a real answer: Get-HybridConfiguration returns nothing when the
# organisation never ran the Hybrid Configuration Wizard; the collection script reports a missing auth certificate.
NULL_WHEN_EMPTY = frozenset({"exchange.hybrid_configuration", "os.auth_certificate", "os.next_auth_certificate"})
# Per-server sources whose objects carry the server they belong to in their Server property.
SERVER_PROPERTY_SOURCES = frozenset(name for name, fields in FIELDS.items() if fields[:1] == ("Server",))


class ShapeError(HmaCheckError, ValueError):
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
    if source_name == "os.iis_ssl_flags" and isinstance(obj.get("ApplicationHostConfig"), str):
        # the collection script sends the file as it read it: the same reading as a live scan's
        from hma_check.collect.iis_config import ApplicationHostError, hma_ssl_flags
        try:
            return hma_ssl_flags(obj.get("ApplicationHostConfig"))
        except ApplicationHostError as exc:
            raise ShapeError(str(exc)) from None
    if source_name in ("os.auth_certificate", "os.next_auth_certificate") and obj.get("InStore") is False:
        return None  # the script looked the thumbprint up and the store does not hold it
    if source_name == "os.exsetup_version" and "Path" not in obj and "FileName" in obj:
        # FileVersionInfo calls it FileName; Get-Command's ApplicationInfo (and the contract) call it Path.
        return {"FileVersion": obj.get("FileVersion"), "Path": obj.get("FileName")}
    return obj.pick(fields)


def certificate_record(obj: ClixmlObject) -> dict[str, Any]:
    """The contract's certificate record from an object's RawData: an ExchangeCertificate, or the X509Certificate2
    the OS collector reads from a server's store (a remote session sends certificates as RawData only)."""
    # imported here, not with the module: cryptography's x509 takes ~30 ms to import, which a scan would otherwise
    # spend before its first session opens instead of while its first per-server calls wait on the network
    from hma_check.collect.certificates import CertificateError, certificate_from_der

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
