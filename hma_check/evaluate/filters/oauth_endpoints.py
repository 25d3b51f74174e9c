"""Where Exchange fetches the metadata it validates Entra ID tokens with, per Microsoft cloud.

The Hybrid Configuration Wizard points the EvoSts AuthServer at https://<sign-in host>/<tenant>/federationmetadata/
2007-06/federationmetadata.xml and sets its Realm to the tenant id. The sign-in hosts per cloud are Microsoft's
(https://learn.microsoft.com/entra/identity-platform/authentication-national-cloud); a tenant's cloud shows in its
initial domain (contoso.onmicrosoft.com, contoso.onmicrosoft.us, contoso.partner.onmschina.cn).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

# cloud -> (initial-domain suffix, Entra sign-in hosts, Access Control Service host)
CLOUDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "global": ((".onmicrosoft.com",), ("login.windows.net", "login.microsoftonline.com"),
               ("accounts.accesscontrol.windows.net",)),
    "usgov": ((".onmicrosoft.us",), ("login.microsoftonline.us",), ("accounts.accesscontrol.windows.net",)),
    "china": ((".onmschina.cn",), ("login.chinacloudapi.cn", "login.partner.microsoftonline.cn"),
              ("accounts.accesscontrol.chinacloudapi.cn",)),
}
METADATA_PATH = ("federationmetadata", "2007-06", "federationmetadata.xml")


def tenant_cloud(organization: Any) -> str:
    """The cloud of a Graph organization, from its initial domain; ValueError when it cannot be told."""
    domains = [d for d in (organization or {}).get("verifiedDomains") or [] if isinstance(d, dict)]
    initial = next((str(d.get("name") or "").lower() for d in domains if d.get("isInitial") is True), "")
    for cloud, (suffixes, _, _) in CLOUDS.items():
        if initial.endswith(suffixes):
            return cloud
    raise ValueError(f"the tenant's cloud cannot be told from its initial domain {initial or '(none)'}: verify the "
                     "metadata URL by hand")


def _tenant_names(organization: dict[str, Any]) -> set[str]:
    names = {str(organization.get("id") or "").lower()}
    names |= {str(d.get("name") or "").lower() for d in organization.get("verifiedDomains") or [] if isinstance(d, dict)}
    return names - {""}


def evosts_metadata_problems(auth_server: Any, organization: Any) -> list[str]:
    """What is wrong with an EvoSts AuthServer's AuthMetadataUrl and Realm for its tenant (empty: nothing)."""
    cloud = tenant_cloud(organization)
    problems = []
    url = str(auth_server.get("AuthMetadataUrl") or "")
    parts = urlsplit(url)
    segments = [s.lower() for s in parts.path.split("/") if s]
    hosts = CLOUDS[cloud][1]
    if parts.scheme.lower() != "https" or (parts.hostname or "").lower() not in hosts:
        problems.append(f"AuthMetadataUrl {url or '(empty)'} is not on the {cloud} cloud's sign-in host "
                        f"({' or '.join(hosts)})")
    elif len(segments) != 4 or tuple(segments[1:]) != METADATA_PATH:
        problems.append(f"AuthMetadataUrl {url} is not <host>/<tenant>/federationmetadata/2007-06/"
                        "federationmetadata.xml")
    elif segments[0] not in _tenant_names(organization):
        problems.append(f"AuthMetadataUrl names {segments[0]}, not tenant {organization.get('id')} or one of its "
                        "verified domains")
    realm = str(auth_server.get("Realm") or "").lower()
    if realm != str(organization.get("id") or "").lower():
        problems.append(f"Realm {auth_server.get('Realm') or '(empty)'} is not the tenant id {organization.get('id')}")
    return problems


def partner_metadata_problems(application: Any, organizations: Any) -> list[str]:
    """The Exchange Online partner application takes its trust from the AuthServer (UseAuthServer): its own
    AuthMetadataUrl and Realm are empty, or name one of the scanned tenants on that tenant's cloud."""
    problems = []
    tenants = [o for o in organizations or [] if isinstance(o, dict)]
    url = str(application.get("AuthMetadataUrl") or "")
    if url:
        parts = urlsplit(url)
        segments = [s.lower() for s in parts.path.split("/") if s]
        host = (parts.hostname or "").lower()
        matching = [t for t in tenants if segments and segments[0] in _tenant_names(t)
                    and host in CLOUDS[tenant_cloud(t)][1] + CLOUDS[tenant_cloud(t)][2]]
        if parts.scheme.lower() != "https" or not matching:
            problems.append(f"AuthMetadataUrl {url} names no scanned tenant on its cloud's sign-in or ACS host "
                            "(the Hybrid Configuration Wizard leaves it empty: the AuthServer's metadata is used)")
    realm = str(application.get("Realm") or "").lower()
    if realm and realm not in {str(t.get("id") or "").lower() for t in tenants}:
        problems.append(f"Realm {application.get('Realm')} is not a scanned tenant's id")
    return problems
