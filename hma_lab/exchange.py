"""The Microsoft.Exchange session configuration of the lab: Exchange's read cmdlets answered from a scenario.

Fidelity rules (as a real Exchange remote session behaves): NoLanguage (a script is refused with ScriptsNotAllowed), every command is
resolved before anything runs (CommandNotFoundException), an unknown parameter is NamedParameterNotFound, a missing
object is a non-terminating error, and objects are shaped as a remote session sends them. Latency and faults come
from the scenario; every command is logged by the PSRP host before it runs.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
import threading
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from hma_lab import binding, errors
from hma_lab.captures import Captured
from hma_lab.certs import CertificateStore
from hma_lab.exchange_types import IIS_DERIVED, KINDS, VDIR_CMDLETS
from hma_lab.psrp import Invocation
from hma_lab.psvalues import MultiValued, Serialized, Uri, ex_object
from hma_lab.scenario import Fault, Scenario, ServerSpec

# Exchange cmdlets add DomainController to PowerShell's common parameters.
COMMON_PARAMETERS = (*binding.COMMON_PARAMETERS, "DomainController")
EXCHANGE_ONLINE_APP = "00000002-0000-0ff1-ce00-000000000000"
RESULT_SIZE_WARNING = (
    "By default, only the first 1000 items are returned. Use the ResultSize parameter to specify the number of items "
    "returned. To return all items, specify \"-ResultSize Unlimited\". Be aware that, depending on the actual number "
    "of items, returning all items can take a long time and consume a large amount of memory. Also, we don't "
    "recommend storing the results in a variable. Instead, pipe the results to another task or script to perform "
    "batch changes.")
_LAB_GUID_NAMESPACE = uuid.UUID("5d0b1f4e-8a43-4c1e-9b7e-6c3f2a9d0e11")


_Handler = Callable[["_Call"], list[Any]]


def _cmdlet(name: str, handler: _Handler, parameters: str, per_server: bool = False,
            positional: str | None = "Identity") -> binding.Cmdlet[_Handler]:
    return binding.Cmdlet(name, handler, tuple(parameters.split()), positional, per_server)


class _Call:
    """One bound cmdlet call: parameters by canonical name, the server it targets, and its invocation."""

    def __init__(self, cmdlet: binding.Cmdlet[_Handler], params: dict[str, Any], invocation: Invocation) -> None:
        self.cmdlet = cmdlet
        self.params = params
        self.invocation = invocation

    def switch(self, name: str) -> bool:
        if name not in self.params:
            return False
        value = self.params[name]
        return True if value is None else bool(value)

    @property
    def target_server(self) -> str:
        if self.params.get("Server"):
            return str(self.params["Server"])
        identity = self.params.get("Identity")
        if isinstance(identity, str) and "\\" in identity and self.cmdlet.per_server:
            return identity.split("\\", 1)[0]
        return ""


class ExchangeConfiguration:
    """Answers pipelines on the ``Microsoft.Exchange`` endpoint from one scenario."""

    name = "Microsoft.Exchange"

    def __init__(self, scenario: Scenario, certificates: CertificateStore) -> None:
        self.scenario = scenario
        self.certs = certificates
        self.org = scenario.organization
        self.lock = threading.Lock()
        endpoint = next((s for s in scenario.servers if not s.is_edge), scenario.servers[0])
        self.endpoint_server = endpoint
        self.created = datetime(2021, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
        self._serialized: dict[tuple[Any, ...], Serialized] = {}
        self.cmdlets = binding.table(self._cmdlet_table(endpoint))

    # ------------------------------------------------------------------------------------------ Configuration

    def application_private_data(self) -> dict[str, Any]:
        return {}

    def invoke(self, invocation: Invocation) -> None:
        call = _Call(*binding.resolve(invocation.commands, self.cmdlets, COMMON_PARAMETERS), invocation)
        replayed = self.scenario.captures.get(call.cmdlet.name.lower())

        def produce(holding: Invocation) -> Iterable[Any]:
            call.invocation = holding
            return self._replay(call, replayed) if replayed is not None else call.cmdlet.handler(call)

        binding.answer_call(invocation, *self._latency_and_fault(call), produce)

    def _latency_and_fault(self, call: _Call) -> tuple[float, Fault | None, Callable[[Fault], errors.CmdletError]]:
        """The scenario's latency for the call, its matching fault, and how that fault answers."""
        latency = self.scenario.latency
        name = call.cmdlet.name
        delay = latency["cmdlets"].get(name.lower())
        if delay is None:
            delay = (latency["per_server"] if call.cmdlet.per_server and call.target_server
                     and latency["per_server"] is not None else latency["default"])
        target = call.target_server
        fault = self.scenario.cmdlet_fault(name, self.scenario.server(target) if target else None)

        def answer(fault: Fault) -> errors.CmdletError:
            task = _task_name(name)
            if fault.effect == "throttle":
                # Exchange names how long to wait; the lab keeps it short so tests stay fast.
                return errors.throttled(call.invocation.user, 20, 60, 250)
            if fault.effect == "error":
                return errors.cmdlet_failure(fault.value, answering_server=self.endpoint_server.name, task=task)
            return errors.object_not_found(target or str(call.params.get("Identity", name)),
                                           answering_server=self.endpoint_server.name,
                                           domain_controller=self.org["domain_controller"], task=task)

        return delay, fault, answer

    # ------------------------------------------------------------------------------------------ the cmdlets

    def _cmdlet_table(self, endpoint: ServerSpec) -> list[binding.Cmdlet[_Handler]]:
        major, minor, build, _ = endpoint.build
        table = [
            _cmdlet("Get-ExchangeServer", self._exchange_server, "Identity Status Domain"),
            _cmdlet("Get-OrganizationConfig", self._single("OrganizationConfig"), "Identity", positional="Identity"),
            _cmdlet("Get-AuthServer", self._list("AuthServer"), "Identity"),
            _cmdlet("Get-PartnerApplication", self._list("PartnerApplication"), "Identity"),
            _cmdlet("Get-AuthConfig", self._auth_config, "Identity"),
            _cmdlet("Get-HybridConfiguration", self._hybrid_configuration, "Identity"),
            _cmdlet("Get-IntraOrganizationConnector", self._list("IntraOrganizationConnector"), "Identity"),
            _cmdlet("Get-SettingOverride", self._list("SettingOverride"), "Identity"),
            _cmdlet("Get-AcceptedDomain", self._list("AcceptedDomain"), "Identity"),
            _cmdlet("Get-Mailbox", self._mailboxes, "Identity ResultSize RecipientTypeDetails Filter"),
            _cmdlet("Get-CASMailbox", self._cas_mailboxes, "Identity ResultSize Filter"),
            _cmdlet("Get-RoleGroupMember", self._role_group_members, "Identity ResultSize"),
            _cmdlet("Get-User", self._users, "Identity ResultSize Filter"),
            _cmdlet("Get-ActiveSyncOrganizationSettings", self._single("ActiveSyncOrganizationSettings"),
                    "Identity"),
            _cmdlet("Get-ActiveSyncDeviceAccessRule", self._list("ActiveSyncDeviceAccessRule"), "Identity"),
            _cmdlet("Get-ExchangeCertificate", self._certificates, "Identity Server Thumbprint", per_server=True,
                    positional="Thumbprint"),
        ]
        for cmdlet_name in VDIR_CMDLETS:
            table.append(_cmdlet(cmdlet_name, self._vdirs, "Identity Server ADPropertiesOnly ShowMailboxVirtualDirectories",
                                 per_server=True))
        # The cmdlet set depends on the version of the server that answers (the one this endpoint runs on):
        # Get-ClientAccessServer is the 2013 name (an alias with a warning on 2016, gone in 2019), and
        # Get-AuthenticationPolicy arrived in Exchange 2019 CU2 (15.2.397).
        if (major, minor) <= (15, 1):
            table.append(_cmdlet("Get-ClientAccessServer", self._client_access, "Identity"))
        if (major, minor) >= (15, 1):
            table.append(_cmdlet("Get-ClientAccessService", self._client_access, "Identity"))
        if (major, minor, build) >= (15, 2, 397):
            table.append(_cmdlet("Get-AuthenticationPolicy", self._authentication_policies, "Identity"))
        return table

    def _authentication_policies(self, call: _Call) -> list[Any]:
        """The BlockModernAuth* switches exist from Exchange 2019 CU13 (15.2.1258): an older server's objects do not
        carry them at all (Set-AuthenticationPolicy documents them as 'Exchange 2019 CU13 or later')."""
        items = [self._org_object("AuthenticationPolicy", props)
                 for props in self.scenario.objects.get("AuthenticationPolicy", [])]
        if tuple(self.endpoint_server.build[:3]) < (15, 2, 1258):
            items = [{k: ABSENT if k.startswith("BlockModernAuth") else v for k, v in item.items()} for item in items]
        return self._filter_identity(call, items, "AuthenticationPolicy")

    def _single(self, kind: str) -> Callable[[_Call], list[Any]]:
        def handler(call: _Call) -> list[Any]:
            return [self._object(kind, self._org_object(kind))]
        return handler

    def _list(self, kind: str) -> Callable[[_Call], list[Any]]:
        def handler(call: _Call) -> list[Any]:
            items = [self._org_object(kind, props) for props in self.scenario.objects.get(kind, [])]
            return self._filter_identity(call, items, kind)
        return handler

    def _filter_identity(self, call: _Call, items: list[dict[str, Any]], kind: str) -> list[Any]:
        identity = call.params.get("Identity")
        if identity is None:
            return [self._object(kind, item) for item in items]
        wanted = str(identity)
        found = [item for item in items if _identity_matches(item, wanted)]
        if not found:
            return [self._not_found(call, wanted)]
        return [self._object(kind, item) for item in found]

    def _not_found(self, call: _Call, identity: str) -> errors.CmdletError:
        return errors.object_not_found(identity, answering_server=self.endpoint_server.name,
                                       domain_controller=self.org["domain_controller"],
                                       task=_task_name(call.cmdlet.name))

    def _exchange_server(self, call: _Call) -> list[Any]:
        items = [self._server_object(server) for server in self.scenario.servers]
        return self._filter_identity(call, items, "ExchangeServer")

    def _auth_config(self, call: _Call) -> list[Any]:
        props = dict(self.scenario.auth_config)
        for ref, prop in (("current_certificate", "CurrentCertificateThumbprint"),
                          ("previous_certificate", "PreviousCertificateThumbprint"),
                          ("next_certificate", "NextCertificateThumbprint")):
            cert_id = props.pop(ref, None)
            if cert_id is not None:
                props[prop] = self.certs.get(cert_id).thumbprint
        defaults = {"Name": "Auth Configuration", "CurrentCertificateThumbprint": "", "PreviousCertificateThumbprint": "",
                    "NextCertificateThumbprint": "", "NextCertificateEffectiveDate": None,
                    "ServiceName": EXCHANGE_ONLINE_APP, "Realm": "", "IssuerIdentifier": ""}
        return [self._object("AuthConfig", self._org_object("AuthConfig", {**defaults, **props}), "Auth Configuration")]

    def _hybrid_configuration(self, call: _Call) -> list[Any]:
        spec = self.scenario.hybrid_configuration
        if spec is None:
            return []
        props = dict(spec)
        cert_id = props.pop("tls_certificate", None)
        if cert_id is not None:
            issued = self.certs.get(cert_id)
            props.setdefault("TlsCertificateName", f"<I>{issued.issuer}<S>{issued.subject}")
        defaults = {"Name": "Hybrid Configuration", "ClientAccessServers": [], "EdgeTransportServers": [],
                    "ReceivingTransportServers": [], "SendingTransportServers": [], "OnPremisesSmartHost": None,
                    "Domains": [], "Features": [], "ExternalIPAddresses": [], "TlsCertificateName": None,
                    "ServiceInstance": 0}
        return [self._object("HybridConfiguration", self._org_object("HybridConfiguration", {**defaults, **props}),
                             "Hybrid Configuration")]

    def _client_access(self, call: _Call) -> list[Any]:
        items = []
        for server in self.scenario.servers:
            if not server.serves_clients:
                continue
            props = {"Name": server.name, "Fqdn": server.fqdn,
                     "AutoDiscoverServiceInternalUri": server.extra.get(
                         "autodiscover_service_internal_uri",
                         f"https://{self.org['autodiscover_namespace']}/Autodiscover/Autodiscover.xml"),
                     "AutoDiscoverSiteScope": [server.site], "AutoDiscoverServiceCN": server.name}
            items.append(self._ad_common(props, f"CN={server.name},CN=Servers", server.name))
        return self._filter_identity(call, items, "ClientAccessService")

    def _mailboxes(self, call: _Call) -> list[Any]:
        items = [self._mailbox(m) for m in self.scenario.objects.get("Mailbox", [])]
        return self._result_size(call, self._filtered(call, items), "Mailbox")

    def _cas_mailboxes(self, call: _Call) -> list[Any]:
        items = []
        for mailbox in self.scenario.objects.get("Mailbox", []):
            base = self._mailbox(mailbox)
            props = {"Name": base["Name"], "PrimarySmtpAddress": base["PrimarySmtpAddress"],
                     "MapiHttpEnabled": mailbox.get("MapiHttpEnabled"), "EwsEnabled": None,
                     "ActiveSyncEnabled": True, "OWAEnabled": True}
            items.append(self._ad_common(props, f"CN={base['Name']},CN=Users", base["Name"]))
        return self._result_size(call, self._filtered(call, items), "CASMailbox")

    def _role_group_members(self, call: _Call) -> list[Any]:
        group = str(call.params.get("Identity") or "")
        if group.lower() != "organization management":
            return [self._not_found(call, group)]
        out = []
        for user in self.scenario.objects.get("User", []):
            props = {"Name": user["Name"], "DisplayName": user.get("DisplayName") or user["Name"],
                     "RecipientType": user.get("RecipientType") or "UserMailbox",
                     "RecipientTypeDetails": user.get("RecipientTypeDetails"),
                     "PrimarySmtpAddress": user.get("UserPrincipalName")}
            out.append(self._object("RoleGroupMember", self._ad_common(props, f"CN={user['Name']},CN=Users",
                                                                       user["Name"])))
        return out

    def _users(self, call: _Call) -> list[Any]:
        """Every user: the administrators and the mailbox owners (Get-User reads them all), each with the
        authentication policy assigned to it (null: the organisation's default applies)."""
        users = [dict(user) for user in self.scenario.objects.get("User", [])]
        known = {user["Name"].lower() for user in users}
        for mailbox in self.scenario.objects.get("Mailbox", []):
            if mailbox["Name"].lower() not in known:
                users.append({"Name": mailbox["Name"], "UserPrincipalName": mailbox.get("UserPrincipalName"),
                              "SamAccountName": mailbox["Name"], "DisplayName": mailbox.get("DisplayName")
                              or mailbox["Name"], "RecipientType": "UserMailbox",
                              "RecipientTypeDetails": mailbox.get("RecipientTypeDetails") or "UserMailbox",
                              "AuthenticationPolicy": mailbox.get("AuthenticationPolicy")})
        items = [self._ad_common({"AuthenticationPolicy": None, **user}, f"CN={user['Name']},CN=Users", user["Name"])
                 for user in users]
        if call.params.get("Identity") is None:
            return self._result_size(call, self._filtered(call, items), "User")
        return self._filter_identity(call, self._filtered(call, items), "User")

    def _vdirs(self, call: _Call) -> list[Any]:
        kind, folder = VDIR_CMDLETS[call.cmdlet.name]
        ad_only = call.switch("ADPropertiesOnly")
        servers = self._target_servers(call)
        if isinstance(servers, errors.CmdletError):
            return [servers]
        identity = call.params.get("Identity")
        out: list[Any] = []
        for server in servers:
            if not server.has_virtual_directory(kind):
                continue
            name = f"{folder} (Default Web Site)"
            if identity is not None and not fnmatch.fnmatch(f"{server.name}\\{name}".lower(), str(identity).lower()) \
                    and "\\" in str(identity):
                continue
            out.append(self._cached(("vdir", kind, server.name, ad_only),
                                    lambda: self._object(kind, self._vdir_properties(kind, folder, server, ad_only))))  # noqa: B023 - called at once
        if not out and identity is not None:
            # A server without this directory simply has none; an Identity that matches nothing is "not found".
            return [self._not_found(call, str(identity))]
        return out

    def _target_servers(self, call: _Call) -> list[ServerSpec] | errors.CmdletError:
        wanted = call.target_server
        if not wanted:
            return list(self.scenario.servers)
        server = self.scenario.server(wanted)
        if server is None:
            return self._not_found(call, wanted)
        return [server]

    def _certificates(self, call: _Call) -> list[Any]:
        servers = self._target_servers(call)
        if isinstance(servers, errors.CmdletError):
            return [servers]
        if not call.target_server:
            servers = [self.endpoint_server]  # without -Server, Get-ExchangeCertificate reads the local server
        wanted = str(call.params.get("Thumbprint") or "").upper()
        if not wanted and isinstance(call.params.get("Identity"), str) and "\\" in call.params["Identity"]:
            wanted = call.params["Identity"].split("\\", 1)[1].upper()
        out: list[Any] = []
        for server in servers:
            for cert_id in server.certificates:
                issued = self.certs.get(cert_id, server)
                if wanted and issued.thumbprint != wanted:
                    continue
                # A remote session sends only RawData: the rest lives in Exchange's SerializationData blob, which a
                # non-Windows client cannot read.
                out.append(self._cached(("certificate", cert_id, server.name), lambda: ex_object(
                    ["Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
                     "System.Security.Cryptography.X509Certificates.X509Certificate2",
                     "System.Security.Cryptography.X509Certificates.X509Certificate", "System.Object"],
                    issued.to_string(), {"RawData": issued.der},  # noqa: B023 - _cached calls it at once
                    {"SerializationData": serialization_data("ExchangeCertificate")})))
        if wanted and not out:
            return [self._not_found(call, wanted)]
        return out

    def _replay(self, call: _Call, objects: list[Captured]) -> list[Any]:
        """A captured cmdlet's objects, filtered by -Identity or -Server, sent as the bytes they were recorded as."""
        wanted_server = call.target_server.lower()
        identity = call.params.get("Identity")
        out: list[Any] = []
        for obj in objects:
            props = obj.properties
            if wanted_server and str(props.get("Server") or "").lower() not in (wanted_server, ""):
                continue
            if identity is not None and not _identity_matches(props, str(identity)):
                continue
            out.append(Serialized(obj.wire))
        if identity is not None and not out:
            return [self._not_found(call, str(identity))]
        return out

    # ------------------------------------------------------------------------------------------ objects

    def _cached(self, key: tuple[Any, ...], build: Callable[[], Serialized]) -> Serialized:
        with self.lock:
            found = self._serialized.get(key)
        if found is None:
            found = build()
            with self.lock:
                self._serialized[key] = found
        return found

    def _object(self, kind: str, props: dict[str, Any], to_string: str | None = None) -> Any:
        """One object as a remote session sends it: every property of its type, in the type's order (null where the
        scenario leaves it unset, as Exchange sends an empty property; ABSENT where this version has no such
        property), dates in the server's local time (the *UTC ones in UTC), and Exchange's SerializationData blob
        at the size real objects of the type carry, so objects span PSRP fragments as real ones do."""
        spec = KINDS[kind]
        wire: dict[str, Any] = {}
        # unset: an empty collection for a multi-valued property, null for the rest; an explicit null stays null
        ordered = {**{name: [] if code == "mv" else None for name, code in spec.properties.items()}, **props}
        for name, value in ordered.items():
            if value is ABSENT:
                continue
            code = spec.properties.get(name)
            if code == "mv" and value is not None:
                item_type = (spec.mv_item_types or {}).get(name, "System.String, mscorlib")
                value = MultiValued(value, item_type, ad=name.endswith("AuthenticationMethods")
                                    or kind in ("HybridConfiguration",))
            elif code == "uri":
                value = Uri(value) if value else None
            elif code == "dt" and isinstance(value, str):
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            elif code == "g" and isinstance(value, str):
                value = uuid.UUID(value)
            if code == "dt" and isinstance(value, datetime) and not name.endswith("UTC"):
                value = value.astimezone(self.org["local_time"])   # DateTimeKind.Local: the server's offset
            wire[name] = value
        text = to_string if to_string is not None else str(props.get("Identity") or props.get("Name") or "")
        return ex_object(list(spec.type_names), text, wire, {"SerializationData": serialization_data(kind)})

    def _ad_common(self, props: dict[str, Any], rdn_path: str, identity: str, version: str = "0.1 (8.0.535.0)",
                   ) -> dict[str, Any]:
        domain = self.org["ad_domain"]
        dn = f"{rdn_path},CN={self.org['name']},CN=Microsoft Exchange,CN=Services,CN=Configuration," + \
             ",".join(f"DC={part}" for part in domain.split("."))
        common = {"AdminDisplayName": "", "ExchangeVersion": version, "DistinguishedName": dn,
                  "Identity": identity, "Guid": str(uuid.uuid5(_LAB_GUID_NAMESPACE, dn)),
                  "ObjectCategory": f"{domain}/Configuration/Schema/ms-Exch-Exchange-Server",
                  "ObjectClass": ["top"], "WhenChanged": self.created, "WhenCreated": self.created,
                  "WhenChangedUTC": self.created, "WhenCreatedUTC": self.created, "OrganizationId": "",
                  "Id": identity, "OriginatingServer": self.org["domain_controller"], "IsValid": True,
                  "ObjectState": "Unchanged"}
        return {**common, **props}

    def _org_object(self, kind: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
        props = dict(props or {})
        if kind == "OrganizationConfig":
            defaults = {"Name": self.org["name"], "DisplayName": self.org["name"], "OAuth2ClientProfileEnabled": False,
                        "PerTenantSwitchToESTSEnabled": False, "MapiHttpEnabled": True, "EnableDownloadDomains": False,
                        "DefaultAuthenticationPolicy": None, "HybridConfigurationStatus": "Unknown",
                        "EwsEnabled": None, "ActivityBasedAuthenticationTimeoutEnabled": True,
                        "CustomerFeedbackEnabled": False, "IsMixedMode": False, "ObjectVersion": 16759,
                        "AdminDisplayVersion": "0.20 (15.1.0.0)"}
            props = {**defaults, **self.org["config"], **props}
            return self._ad_common(props, "CN=Microsoft Exchange", self.org["name"], "2.0 (15.0.0.0)")
        if kind == "ActiveSyncOrganizationSettings":
            settings = (self.scenario.objects.get(kind) or [{}])[0]
            props = {"Name": "Mobile Mailbox Settings", "DefaultAccessLevel": "Allow", "UserMailInsert": "",
                     "AllowAccessForUnSupportedPlatform": False, "AdminMailRecipients": [], **settings, **props}
            return self._ad_common(props, "CN=Mobile Mailbox Settings", props["Name"], "0.10 (14.0.100.0)")
        defaults = {
            "AuthServer": {"Enabled": True, "IsDefaultAuthorizationEndpoint": False, "Type": "AzureAD",
                           "DomainName": [], "CertificateStrings": [], "ApplicationIdentifier": None,
                           "AuthorizationEndpoint": "https://login.windows.net/common/oauth2/authorize",
                           "RequireTokenEncryption": False},
            "PartnerApplication": {"Enabled": True, "UseAuthServer": True, "AuthMetadataUrl": "", "Realm": "",
                                   "CertificateStrings": [], "AcceptSecurityIdentifierInformation": False,
                                   "LinkedAccount": None, "IssuerIdentifier": "", "AccountType": "OrganizationalAccount",
                                   "AppOnlyPermissions": None, "ActAsPermissions": None},
            "IntraOrganizationConnector": {"Enabled": True, "TargetAddressDomains": [], "TargetSharingEpr": None},
            "SettingOverride": {"Parameters": [], "Server": None, "MinVersion": None, "MaxVersion": None,
                                "Status": "Accepted", "Reason": "", "IsFlight": False},
            "AcceptedDomain": {"DomainType": "Authoritative", "Default": False},
            "AuthenticationPolicy": {f"Block{kind}Auth{p}": False for kind in ("Legacy", "Modern") for p in (
                "ActiveSync", "Autodiscover", "Imap", "Mapi", "OfflineAddressBook", "Pop", "Rpc", "WebServices")},
            "ActiveSyncDeviceAccessRule": {},
            "AuthConfig": {}, "HybridConfiguration": {},
        }.get(kind, {})
        props = {**defaults, **props}
        if kind == "AcceptedDomain":
            props.setdefault("DomainName", props["Name"])
        name = str(props.get("Name") or kind)
        return self._ad_common(props, f"CN={name},CN={kind}", name, "0.20 (15.0.0.0)")

    def _server_object(self, server: ServerSpec) -> dict[str, Any]:
        major = server.build[0]
        roles = "Edge" if server.is_edge else ", ".join(r for r in server.roles)
        props = {
            "Name": server.name, "DataPath": "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\Mailbox",
            "Domain": self.org["ad_domain"], "Edition": server.edition,
            "ExchangeLegacyDN": f"/o={self.org['name']}/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Configuration"
                                f"/cn=Servers/cn={server.name}",
            "Fqdn": server.fqdn, "InternetWebProxy": server.internet_web_proxy,
            "IsHubTransportServer": not server.is_edge, "IsClientAccessServer": not server.is_edge,
            "IsExchange2007OrLater": major >= 8, "IsEdgeServer": server.is_edge,
            "IsMailboxServer": "Mailbox" in server.roles, "IsE14OrLater": major >= 14, "IsE15OrLater": major >= 15,
            "IsFrontendTransportServer": not server.is_edge and major >= 15,
            "NetworkAddress": [f"ncacn_ip_tcp:{server.fqdn}", f"ncalrpc:{server.name}"],
            "OrganizationalUnit": f"{self.org['ad_domain']}/{server.name}",
            "AdminDisplayVersion": server.version_text,
            "Site": f"{self.org['ad_domain']}/Configuration/Sites/{server.site}",
            "ServerRole": roles, "ProductID": "00000-00000-00000-00000", "IsExchangeTrialEdition": False,
        }
        return self._ad_common(props, f"CN={server.name},CN=Servers", server.name)

    def virtual_directory(self, kind: str, server: ServerSpec) -> dict[str, Any] | None:
        """The vendor properties Get-<kind>VirtualDirectory reports for one server (IIS truth, not -ADPropertiesOnly),
        or None when the server has none: the lab's HTTPS endpoints answer as these say."""
        if not server.has_virtual_directory(kind):
            return None
        folder = next(folder for cmdlet_kind, folder in VDIR_CMDLETS.values() if cmdlet_kind == kind)
        return self._vdir_properties(kind, folder, server, False)

    def _vdir_properties(self, kind: str, folder: str, server: ServerSpec, ad_only: bool) -> dict[str, Any]:
        namespace = self.org["namespace"]
        name = f"{folder} (Default Web Site)"
        url_paths = {"mapi": "/mapi", "ews": "/EWS/Exchange.asmx", "oab": "/OAB", "autodiscover": None,
                     "activesync": "/Microsoft-Server-ActiveSync", "owa": "/owa", "ecp": "/ecp",
                     "outlook_anywhere": None}
        path = url_paths[kind]
        legacy = server.build[0] < 15
        props: dict[str, Any] = {
            "Server": server.name, "Name": name,
            # a forgotten 2010 server keeps its own name inside and no external URL (the namespace moved on)
            "InternalUrl": (f"https://{server.fqdn}{path}" if legacy else f"https://{namespace}{path}") if path else None,
            "ExternalUrl": None if legacy or not path else f"https://{namespace}{path}",
            "MetabasePath": f"IIS://{server.fqdn}/W3SVC/1/ROOT/{folder}",
            "Path": f"C:\\Program Files\\Microsoft\\Exchange Server\\V15\\FrontEnd\\HttpProxy\\{folder}",
            "ExtendedProtectionTokenChecking": "None", "ExtendedProtectionFlags": [], "ExtendedProtectionSPNList": [],
            "AdminDisplayVersion": server.version_text,
        }
        props.update(_VDIR_DEFAULTS[kind](namespace))
        if legacy:
            # Exchange 2010's virtual directories have no OAuth switch at all
            props.update({prop: ABSENT for prop in ("OAuthAuthentication", "IISAuthenticationMethods") if prop in props})
        if kind == "outlook_anywhere":
            # Outlook Anywhere's SSLOffloading is $true by default before Exchange 2019 CU14 (15.2.1544)
            props["SSLOffloading"] = tuple(server.build[:3]) < (15, 2, 1544)
        props.update(server.virtual_directories.get(kind, {}))
        if ad_only:
            for prop in IIS_DERIVED[kind]:
                props[prop] = False
            props.update(server.ad_properties.get(kind, {}))
        return self._ad_common(props, f"CN={name},CN=HTTP,CN=Protocols,CN={server.name},CN=Servers",
                               f"{server.name}\\{name}", "0.10 (14.0.100.0)")

    def _mailbox(self, mailbox: dict[str, Any]) -> dict[str, Any]:
        name = mailbox["Name"]
        props = {"Name": name, "Alias": name, "DisplayName": mailbox.get("DisplayName") or name,
                 "UserPrincipalName": mailbox.get("UserPrincipalName"),
                 "PrimarySmtpAddress": mailbox.get("PrimarySmtpAddress") or mailbox.get("UserPrincipalName"),
                 "RecipientTypeDetails": mailbox.get("RecipientTypeDetails") or "UserMailbox",
                 "SamAccountName": name, "Database": "Mailbox Database 01"}
        props.update({k: v for k, v in mailbox.items() if k in KINDS["Mailbox"].properties})
        return self._ad_common(props, f"CN={name},CN=Users", name)

    def _filtered(self, call: _Call, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        text = call.params.get("Filter")
        if text is None:
            return items
        match = re.fullmatch(r"\s*(\w+)\s+-(eq|ne)\s+(\$true|\$false|\$null|'[^']*'|\"[^\"]*\")\s*", str(text), re.I)
        if not match:
            raise errors.parameter_invalid(call.cmdlet.name, "Filter", f'Invalid filter syntax: "{text}"')
        prop, op, literal = match.group(1), match.group(2).lower(), match.group(3)
        value: Any = {"$true": True, "$false": False, "$null": None}.get(literal.lower(), literal[1:-1])
        key = next((k for k in (items[0] if items else {}) if k.lower() == prop.lower()), prop)

        def keep(item: dict[str, Any]) -> bool:
            actual = item.get(key)
            if isinstance(actual, str) and isinstance(value, str):
                equal = actual.lower() == value.lower()
            else:
                equal = actual == value
            return equal if op == "eq" else not equal
        return [item for item in items if keep(item)]

    def _result_size(self, call: _Call, items: list[dict[str, Any]], kind: str) -> list[Any]:
        size = call.params.get("ResultSize")
        limit = 1000 if size is None else (None if str(size).lower() == "unlimited" else _int(size))
        if size is None and len(items) > 1000:
            # The real cmdlet warns and truncates: a collector that forgets -ResultSize Unlimited loses data quietly.
            call.invocation.write_warning(RESULT_SIZE_WARNING)
        return [self._object(kind, item) for item in (items if limit is None else items[:limit])]


def _int(value: Any) -> int:
    try:
        return max(int(str(value)), 0)
    except ValueError:
        return 0


def _task_name(cmdlet: str) -> str:
    verb, _, noun = cmdlet.partition("-")
    return f"Microsoft.Exchange.Management.SystemConfigurationTasks.{verb}{noun}"


def _identity_matches(item: dict[str, Any], wanted: str) -> bool:
    wanted_l = wanted.lower()
    for key in ("Identity", "Name", "Fqdn", "DomainName", "ApplicationIdentifier", "UserPrincipalName", "SamAccountName",
                "Sid", "Guid"):
        value = item.get(key)
        if isinstance(value, str) and value.lower() == wanted_l:
            return True
    return False


def _vdir_defaults() -> dict[str, Callable[[str], dict[str, Any]]]:
    # Exchange 2016/2019 defaults once HCW and the HMA doc's vdir steps are done (the procedure lists the MAPI values);
    # scenarios override any of them per server.
    return {
        "mapi": lambda ns: {"IISAuthenticationMethods": ["Ntlm", "OAuth", "Negotiate"],
                            "InternalAuthenticationMethods": ["Ntlm", "OAuth", "Negotiate"],
                            "ExternalAuthenticationMethods": ["Ntlm", "OAuth", "Negotiate"]},
        "ews": lambda ns: {"InternalNLBBypassUrl": None, "MRSProxyEnabled": False,
                           "InternalAuthenticationMethods": ["Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"],
                           "ExternalAuthenticationMethods": ["Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"],
                           "WSSecurityAuthentication": True, "BasicAuthentication": False,
                           "DigestAuthentication": False, "WindowsAuthentication": True, "OAuthAuthentication": True,
                           "AdfsAuthentication": False, "CertificateAuthentication": False},
        "oab": lambda ns: {"OfflineAddressBooks": ["\\Default Offline Address Book"], "PollInterval": 480,
                           "RequireSSL": True, "InternalAuthenticationMethods": ["WindowsIntegrated", "OAuth"],
                           "ExternalAuthenticationMethods": ["WindowsIntegrated", "OAuth"],
                           "BasicAuthentication": False, "WindowsAuthentication": True, "OAuthAuthentication": True},
        "autodiscover": lambda ns: {
            "InternalAuthenticationMethods": ["Basic", "Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"],
            "ExternalAuthenticationMethods": ["Basic", "Ntlm", "WindowsIntegrated", "WSSecurity", "OAuth"],
            "WSSecurityAuthentication": True, "BasicAuthentication": True, "DigestAuthentication": False,
            "WindowsAuthentication": True, "OAuthAuthentication": True, "AdfsAuthentication": False},
        "activesync": lambda ns: {"MobileClientCertificateProvisioningEnabled": False, "BadItemReportingEnabled": True,
                                  "SendWatsonReport": False, "InternalAuthenticationMethods": ["Basic"],
                                  "ExternalAuthenticationMethods": ["Basic"], "BasicAuthEnabled": True,
                                  "WindowsAuthEnabled": False, "CompressionEnabled": True, "ClientCertAuth": "Ignore",
                                  "ActiveSyncServer": f"https://{ns}/Microsoft-Server-ActiveSync"},
        "owa": lambda ns: {"LogonFormat": "FullDomain", "DefaultDomain": "",
                           "InternalAuthenticationMethods": ["Basic", "Fba"], "ExternalAuthenticationMethods": ["Fba"],
                           "BasicAuthentication": True, "WindowsAuthentication": False, "DigestAuthentication": False,
                           "FormsAuthentication": True, "LiveIdAuthentication": False, "AdfsAuthentication": False,
                           "OAuthAuthentication": False, "ExternalDownloadHostName": "",
                           "InternalDownloadHostName": ""},
        "ecp": lambda ns: {"AdminEnabled": True, "OwaOptionsEnabled": True,
                           "InternalAuthenticationMethods": ["Basic", "Fba"], "ExternalAuthenticationMethods": ["Fba"],
                           "BasicAuthentication": True, "WindowsAuthentication": False, "DigestAuthentication": False,
                           "FormsAuthentication": True, "LiveIdAuthentication": False, "AdfsAuthentication": False,
                           "OAuthAuthentication": False},
        "outlook_anywhere": lambda ns: {"SSLOffloading": False, "ExternalHostname": ns, "InternalHostname": ns,
                                        "ExternalClientAuthenticationMethod": "Negotiate",
                                        "InternalClientAuthenticationMethod": "Ntlm",
                                        "IISAuthenticationMethods": ["Basic", "Ntlm", "Negotiate"], "XropUrl": None,
                                        "ExternalClientsRequireSsl": True, "InternalClientsRequireSsl": True,
                                        "InternalAuthenticationMethods": ["Ntlm"],
                                        "ExternalAuthenticationMethods": ["Negotiate"]},
    }


_VDIR_DEFAULTS = _vdir_defaults()


# A property this version of the object does not have at all (not even as null): BlockModernAuth* before Exchange 2019
# CU13, OAuthAuthentication on an Exchange 2010 virtual directory.
ABSENT = object()

# Base64 characters of SerializationData (Exchange's BinaryFormatter copy of the object, in <MS>) per type, as measured
# in real captures of microsoft/CSS-Exchange (tests/data/css-exchange): AuthConfig 18,740, ExchangeServer 91,316,
# OrganizationConfig 41,032, HybridConfiguration 24,776, PartnerApplication 21,232, SettingOverride 18,752,
# AcceptedDomain 19,388, WebServicesVirtualDirectory 25,624, OwaVirtualDirectory 116,716, ExchangeCertificate 4,616.
# Types nobody captured get the size of the nearest kin. The bytes are filler: no client can read the real format.
_SERIALIZATION_CHARS = {"AuthConfig": 18740, "ExchangeServer": 91316, "OrganizationConfig": 41032,
                        "HybridConfiguration": 24776, "PartnerApplication": 21232, "AuthServer": 21232,
                        "SettingOverride": 18752, "AcceptedDomain": 19388, "owa": 116716, "ecp": 116716,
                        "ExchangeCertificate": 4616}
_DEFAULT_SERIALIZATION_CHARS = 25624   # a virtual directory's (EWS), and the other configuration objects'


@functools.lru_cache(maxsize=None)
def serialization_data(kind: str) -> bytes:
    size = _SERIALIZATION_CHARS.get(kind, _DEFAULT_SERIALIZATION_CHARS) * 3 // 4
    seed = hashlib.sha256(kind.encode()).digest()
    return (b"\x00\x01\x00\x00\x00\xff\xff\xff\xff" + seed * (size // len(seed) + 1))[:size]
