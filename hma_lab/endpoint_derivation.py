"""A scenario's outside-in behaviour from its Exchange configuration: nodes, hosts, OAuth, TLS and certificates."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

from hma_lab.endpoints import TLS_VERSIONS, CertificateSpec, EndpointsSpec, HostSpec, NodeSpec, \
    VirtualDirectorySpec
from hma_lab.windows_spec import DEFAULT_SSL_FLAGS

PROTOCOL_KINDS = {"MAPI": "mapi", "EWS": "ews", "OAB": "oab", "Autodiscover": "autodiscover",
                  "ActiveSync": "activesync"}
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
WINDOWS_SERVER_2022_BUILD = 20348  # Schannel enables TLS 1.3 by default from Windows Server 2022


def node_address(index: int) -> str:
    """127.0.1.1, 127.0.1.2, … 127.0.1.254, 127.0.2.1, …: the whole 127.0.0.0/8 is loopback on Linux."""
    return f"127.0.{1 + index // 254}.{1 + index % 254}"


def client_servers(scenario: Any) -> list[Any]:
    """The servers with client virtual directories (Exchange 2013 and later, not Edge), in scenario order."""
    return [server for server in scenario.servers if server.serves_clients]


def skeleton(scenario: Any) -> EndpointsSpec:
    """Nodes named and addressed as the derivation will (no I/O, no certificates): what the endpoints: section is
    validated against when the scenario loads, before the lab runs."""
    nodes = tuple(NodeSpec(server.name, node_address(i)) for i, server in enumerate(client_servers(scenario)))
    return EndpointsSpec(tenant_ids=(), evosts_default=False, oauth2_client_profile_enabled=False, nodes=nodes,
                         hosts=())


def derive_endpoints(scenario: Any, exchange: Any, certificates: Any) -> EndpointsSpec:
    """What a client on the network would meet if the scenario were real.

    Per server (a node): OAuth and the IIS challenges of each virtual directory as the cmdlets report them, SSL
    offloading from Outlook Anywhere, the TLS versions its SCHANNEL registry enables, the certificate IIS would
    present. Per host: the servers whose URLs name it. Organisation-wide: trusted_issuers from the enabled auth
    servers' Realm (what Exchange actually trusts, so a wrong realm shows on the wire), authorization_uri from EvoSts
    IsDefaultAuthorizationEndpoint, oauth_not_available from OAuth2ClientProfileEnabled.
    """
    organization = scenario.organization
    nodes, host_nodes = [], {}
    for index, server in enumerate(client_servers(scenario)):
        vdirs = {protocol: exchange.virtual_directory(kind, server) for protocol, kind in PROTOCOL_KINDS.items()}
        present = {protocol: props for protocol, props in vdirs.items() if props is not None}
        anywhere = exchange.virtual_directory("outlook_anywhere", server) or {}
        behaviours = {protocol: _behaviour(protocol, props) for protocol, props in present.items()}
        if anywhere:
            behaviours["RPC"] = _rpc_behaviour(anywhere)
        nodes.append(NodeSpec(
            name=server.name, address=node_address(index), virtual_directories=behaviours,
            ssl_offloading=_offloaded(server),
            tls_versions=_tls_versions(server),
            certificate=_iis_certificate(scenario, certificates, server, organization.get("namespace")),
            autodiscover_urls={"ActiveSync": _url(vdirs["ActiveSync"]), "EWS": _url(vdirs["EWS"])}))
        names = [urlsplit(props.get(prop) or "").hostname for props in present.values()
                 for prop in ("InternalUrl", "ExternalUrl")]
        # this server's AutodiscoverServiceInternalUri (the organisation's Autodiscover name unless it has its own)
        scp = server.extra.get("autodiscover_service_internal_uri",
                               f"https://{organization.get('autodiscover_namespace')}/Autodiscover/Autodiscover.xml")
        names.append(urlsplit(scp).hostname if scp else None)
        for name in names:
            if name:
                host_nodes.setdefault(name.lower().rstrip("."), []).append(server.name)
    hosts = tuple(HostSpec(name, tuple(dict.fromkeys(servers))) for name, servers in host_nodes.items())
    auth_servers = [a for a in scenario.objects.get("AuthServer", []) if a.get("Enabled") is True]
    default = next((a for a in auth_servers if a.get("IsDefaultAuthorizationEndpoint") is True), None)
    return EndpointsSpec(
        tenant_ids=_tenant_ids(auth_servers, scenario.sections.get("tenants")),
        evosts_default=any(a.get("Type") == "AzureAD" and a.get("IsDefaultAuthorizationEndpoint") is True
                           for a in auth_servers),
        # Get-OrganizationConfig's default is False until Set-OrganizationConfig turns it on.
        oauth2_client_profile_enabled=(organization.get("config") or {}).get("OAuth2ClientProfileEnabled") is True,
        nodes=tuple(nodes), hosts=hosts,
        # Exchange advertises the default authorization endpoint's own AuthorizationEndpoint: Entra ID's for EvoSts,
        # the federation service's for an ADFS AuthServer (on-premises modern authentication, 2019 CU13 and later).
        authorization_uri=(default.get("AuthorizationEndpoint") or None) if default is not None else None)


def _behaviour(protocol: str, props: dict[str, Any]) -> VirtualDirectorySpec:
    """OAuth and the IIS schemes, in Exchange's order (Negotiate, NTLM, Basic), from the vendor properties."""
    if protocol == "MAPI":
        methods = {str(method).lower() for method in props.get("IISAuthenticationMethods") or []}
        challenges = [scheme for scheme in ("Negotiate", "Ntlm", "Basic") if scheme.lower() in methods]
        return VirtualDirectorySpec(oauth="oauth" in methods,
                                    challenges=tuple("NTLM" if c == "Ntlm" else c for c in challenges))
    if protocol == "ActiveSync":
        # ActiveSync has no OAuth switch (checks.yaml HMA-VDIR-005): OAuth is on unless a scenario's endpoints:
        # section turns it off.
        oauth, windows, basic = True, props.get("WindowsAuthEnabled") is True, props.get("BasicAuthEnabled") is True
    else:
        oauth = props.get("OAuthAuthentication") is True
        windows, basic = props.get("WindowsAuthentication") is True, props.get("BasicAuthentication") is True
    challenges = (("Negotiate", "NTLM") if windows else ()) + (("Basic",) if basic else ())
    return VirtualDirectorySpec(oauth=oauth, challenges=challenges)


def _rpc_behaviour(anywhere: dict[str, Any]) -> VirtualDirectorySpec:
    """Outlook Anywhere (/rpc): its IIS schemes; RPC over HTTP has no OAuth (Outlook needs MAPI/HTTP for HMA)."""
    methods = {str(method).lower() for method in anywhere.get("IISAuthenticationMethods") or []}
    challenges = [title for scheme, title in (("negotiate", "Negotiate"), ("ntlm", "NTLM"), ("basic", "Basic"))
                  if scheme in methods]
    return VirtualDirectorySpec(oauth=False, challenges=tuple(challenges))


def _tls_versions(server: Any) -> tuple[str, ...]:
    """The server side of SCHANNEL: a version is on unless Enabled is 0 or DisabledByDefault is non-zero; an absent
    value is Windows' default (TLS 1.0 to 1.2 on, TLS 1.3 on from Windows Server 2022). OpenSSL serves a range, so a
    hole in the middle is served as the whole range."""
    protocols = (server.registry or {}).get("Protocols") or {}
    build = _os_build(server)
    enabled = []
    for version in TLS_VERSIONS:
        values = (protocols.get("TLS " + version[4:]) or {}).get("Server") or {}
        on, off_by_default = values.get("Enabled"), values.get("DisabledByDefault")
        default = version != "TLSv1.3" or build >= WINDOWS_SERVER_2022_BUILD
        if (default if on is None else on != 0) and not off_by_default:
            enabled.append(TLS_VERSIONS.index(version))
    if not enabled:
        return ("TLSv1.2",)  # a server with every version off could not serve IIS at all; keep it reachable
    return TLS_VERSIONS[min(enabled): max(enabled) + 1]


def _os_build(server: Any) -> int:
    system = (getattr(server, "extra", None) or {}).get("operating_system") or {}
    try:
        return int(system.get("BuildNumber") or str(system.get("Version", "0")).rsplit(".", 1)[-1])
    except ValueError:
        return 0


def _iis_certificate(scenario: Any, certificates: Any, server: Any, namespace: str | None) -> CertificateSpec | None:
    """The certificate IIS presents: a CA-issued server certificate naming the namespace, else any CA-issued one,
    else the self-signed one Exchange setup creates. Names, dates and self-signedness come from the very certificate
    Get-ExchangeCertificate reports; the lab issues its own twin of it, since only its CA is trusted by the probes."""
    candidates = []
    for cert_id in server.certificates:
        spec = scenario.certificates.get(cert_id)
        if spec is None or not spec.server_auth:
            continue
        cert = x509.load_der_x509_certificate(certificates.get(cert_id, server).der)
        names = _dns_names(cert)
        if not names:
            continue
        self_signed = cert.subject == cert.issuer
        candidates.append(((self_signed, namespace not in names), names, self_signed, cert))
    if not candidates:
        return None
    _, names, self_signed, chosen = min(candidates, key=lambda candidate: candidate[0])
    return CertificateSpec(names=tuple(names), issuer="untrusted" if self_signed else "lab",
                           not_before=chosen.not_valid_before_utc, not_after=chosen.not_valid_after_utc)


def _dns_names(cert: x509.Certificate) -> list[str]:
    """The names a TLS client matches: the SAN's DNS names, else the subject's common name."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return list(names) or [str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _tenant_ids(auth_servers: list[dict[str, Any]], tenants: Any) -> tuple[str, ...]:
    realms = [str(a.get("Realm")).lower() for a in auth_servers
              if a.get("Type") in ("AzureAD", "MicrosoftACS") and _GUID.fullmatch(str(a.get("Realm")))]
    if not realms:  # no auth server: the tenants: section says which tenant the organisation belongs to
        realms = [tenant.id for tenant in tenants or []]
    return tuple(dict.fromkeys(realms))


def _url(props: dict[str, Any] | None) -> str | None:
    if props is None:
        return None
    return props.get("ExternalUrl") or props.get("InternalUrl") or None


def _offloaded(server: Any) -> bool:
    """TLS ends in front of the server when IIS accepts plain HTTP on an HMA path (Require SSL cleared: Microsoft's
    procedure for SSL offloading); Outlook Anywhere's SSLOffloading flag concerns /rpc only and decides nothing."""
    flags = (server.extra.get("iis") or {}).get("ssl_flags") or DEFAULT_SSL_FLAGS
    return any("Ssl" not in [t.strip() for t in flags[path].split(",")]
               for path in ("mapi", "EWS", "Autodiscover", "OAB", "Microsoft-Server-ActiveSync"))
