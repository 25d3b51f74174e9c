"""``Lab``: start every lab service for one scenario on loopback, hand out endpoints and demo credentials, stop them.

Each module listed in SERVICE_MODULES defines ``start_service(lab) -> LabService | None``, started after the Exchange
endpoint: every server's WinRM endpoint, the Graph and token service, the outside-in HTTPS endpoints.
"""

from __future__ import annotations

import importlib
import os
import secrets
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hma_lab.scenario import Scenario, load_scenario, load_scenario_file

SERVICE_MODULES: tuple[str, ...] = ("hma_lab.windows", "hma_lab.tenants", "hma_lab.endpoints", "hma_lab.clients")


class LabService(Protocol):
    """What a plugged-in service returns: endpoints to print, scan configuration to add, and a way to stop."""

    endpoints: dict[str, Any]
    scan_config: dict[str, Any]      # section name -> configuration the demo scan uses (never secrets)
    secrets: dict[str, str]          # secret values the demo passes to collectors in-process

    def stop(self) -> None: ...


@dataclass
class ExchangeEndpoint:
    host: str
    http_port: int
    https_port: int
    path: str = "PowerShell"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/{self.path}"

    @property
    def https_url(self) -> str:
        return f"https://{self.host}:{self.https_port}/{self.path}"


@dataclass
class Credentials:
    username: str
    password: str = field(repr=False)


class _NtlmAccounts:
    """pyspnego's NTLM acceptor reads accounts only from the file named by NTLM_USER_FILE: keep one per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._passwords: dict[str, str] = {}
        self._users: dict[str, int] = {}
        self._dir: str | None = None

    def password_for(self, username: str) -> str:
        with self._lock:
            return self._passwords.setdefault(username.lower(), secrets.token_urlsafe(18))

    def acquire(self, username: str, password: str) -> None:
        with self._lock:
            self._passwords[username.lower()] = password
            self._users[username.lower()] = self._users.get(username.lower(), 0) + 1
            self._write()

    def release(self, username: str) -> None:
        with self._lock:
            left = self._users.get(username.lower(), 0) - 1
            if left <= 0:
                self._users.pop(username.lower(), None)
            else:
                self._users[username.lower()] = left
            if self._users:
                self._write()
            else:
                self._remove()

    def _write(self) -> None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="hma-check-lab-ntlm-")
        path = os.path.join(self._dir, "users")
        # The smbpasswd form (USERNAME:UID:LM_HASH:NT_HASH:FLAGS:TIMESTAMP), with what a domain controller keeps:
        # the NT hash, and no LM hash (its field zeros, as pyspnego fills a missing hash; "Do not store LAN Manager
        # hash value" is on by default since Windows Server 2008:
        # https://learn.microsoft.com/previous-versions/windows/it-pro/windows-10/security/threat-protection/
        # security-policy-settings/network-security-do-not-store-lan-manager-hash-value-on-next-password-change).
        # From the Heimdal form (DOMAIN:USER:PASSWORD) pyspnego made the hashes from the password again at every
        # sign-in (pure-Python DES and MD4, ~2.5 ms of the lab's CPU per session).
        from spnego._ntlm_raw.crypto import ntowfv1

        lines = []
        for user in self._users:
            lines.append(f"{user}:0:{'0' * 32}:{ntowfv1(self._passwords[user]).hex()}:[U]:LCT-00000000\n")
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        os.replace(path + ".tmp", path)
        os.environ["NTLM_USER_FILE"] = path

    def _remove(self) -> None:
        """The process's last lab stopped: its password does not stay behind on disk."""
        if self._dir is None:
            return
        if os.environ.get("NTLM_USER_FILE") == os.path.join(self._dir, "users"):
            del os.environ["NTLM_USER_FILE"]
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None


NTLM_ACCOUNTS = _NtlmAccounts()


class Lab:
    """``with Lab("ready") as lab:`` starts the scenario's services on 127.0.0.1 and stops them on exit."""

    def __init__(self, scenario: Scenario | str | Path, *, password: str | None = None, realm: Any = None,
                 auth: str | None = None) -> None:
        if isinstance(scenario, Scenario):
            self.scenario = scenario
        elif isinstance(scenario, Path) or (isinstance(scenario, str) and scenario.endswith((".yaml", ".yml"))):
            self.scenario = load_scenario_file(scenario)
        else:
            self.scenario = load_scenario(scenario)
        username = self.scenario.username
        self.credentials = Credentials(username, password or NTLM_ACCOUNTS.password_for(username))
        self.services: list[LabService] = []
        # A started kdc.Realm: the lab's servers then accept Kerberos (and Negotiate wrapping it) for its principals.
        # The process's KRB5_CONFIG must name the realm's krb5.conf: the acceptor finds the service keys through it.
        self.realm = realm
        self.auth = auth or ("kerberos" if realm is not None else "ntlm")
        self.principal: str | None = None
        self._listeners: Any = None
        self._ntlm_users: list[str] = []
        self._tmp: str | None = None
        self.exchange: Any = None
        self.endpoint: Any = None
        self.exchange_endpoint: ExchangeEndpoint | None = None
        # Every WSMan listener of the lab (Exchange's, each server's WinRM) presents one certificate from one private
        # CA, whose certificate (ca_file) the demo scan trusts.
        self.ca_file: Path | None = None
        self.tls: ssl.SSLContext | None = None
        self.tls_cert_der: bytes | None = None
        self.certificates: Any = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "Lab":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> "Lab":
        from hma_lab.certs import CertificateStore
        from hma_lab.exchange import ExchangeConfiguration
        from hma_lab.wsman import Credentials as Accounts, Endpoint, Listener, ListenerGroup

        self._tmp = tempfile.mkdtemp(prefix="hma-check-lab-")
        self.httpproxy_root.mkdir()
        try:
            self.certificates = CertificateStore(self.scenario.certificates)
            self.exchange = ExchangeConfiguration(self.scenario, self.certificates)
            self.endpoint = Endpoint(Accounts(self.accounts()), {self.exchange.name: self.exchange},
                                     max_shells_per_user=self.scenario.max_concurrency,
                                     realm=self.scenario.organization["namespace"])
            self.endpoint.http_fault = self.scenario.http_fault
            NTLM_ACCOUNTS.acquire(self.credentials.username, self.credentials.password)
            self._ntlm_users.append(self.credentials.username)
            self._make_tls()
            if self.realm is not None:
                self._register_principals()
                # Active Directory takes the user principal name over NTLM too: what Negotiate falls back to when
                # no KDC answers.
                NTLM_ACCOUNTS.acquire(self.principal, self.credentials.password)
                self._ntlm_users.append(self.principal)
            self._listeners = ListenerGroup()
            http_port = self._listeners.add(self.endpoint, Listener(encryption_required=True))
            https_port = self._listeners.add(self.endpoint, Listener(tls=self.tls, cert_der=self.tls_cert_der))
            self._listeners.start()
            self.exchange_endpoint = ExchangeEndpoint("127.0.0.1", http_port, https_port)
            for module_name in SERVICE_MODULES:
                service = importlib.import_module(module_name).start_service(self)
                if service is not None:
                    self.services.append(service)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_tls(self) -> None:
        import trustme
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        assert self._tmp is not None and self.exchange is not None
        ca = trustme.CA(organization_name="hma-check lab")
        leaf = ca.issue_cert("127.0.0.1", "localhost", self.exchange.endpoint_server.fqdn,
                             self.scenario.organization["namespace"])
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        leaf.configure_cert(self.tls)
        self.tls_cert_der = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(
            serialization.Encoding.DER)
        self.ca_file = Path(self._tmp) / "lab-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))

    def _register_principals(self) -> None:
        """The account as user@REALM with the lab's password, and HTTP/<FQDN> of the Exchange endpoint's server and
        of every server's WinRM: the SPNs a domain gives each computer (HTTP maps to the computer's HOST SPN)."""
        user = self.credentials.username.rpartition("\\")[2]
        self.principal = self.realm.add_user(user, self.credentials.password)
        hosts = [self.exchange.endpoint_server.fqdn, *(server.fqdn for server in self.scenario.servers)]
        self.realm.add_services(hosts)

    def accounts(self) -> dict[str, str]:
        """The logons every WSMan endpoint of the lab accepts: DOMAIN\\user, and user@ad_domain for the same account."""
        username, password = self.credentials.username, self.credentials.password
        netbios, _, user = username.rpartition("\\")
        accounts = {username.lower(): password}
        if netbios:
            accounts[f"{user}@{self.scenario.organization['ad_domain']}".lower()] = password
        if self.principal:
            accounts[self.principal.lower()] = password
        return accounts

    def stop(self) -> None:
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - stopping one service must not keep the others running
                pass
        self.services.clear()
        if self.endpoint is not None:
            self.endpoint.close_all()
        if self._listeners is not None:
            self._listeners.stop()
            self._listeners = None
        for user in self._ntlm_users:
            NTLM_ACCOUNTS.release(user)
        self._ntlm_users.clear()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # ------------------------------------------------------------------------------------------ what tests and the CLI use

    @property
    def httpproxy_root(self) -> Path:
        """Where the lab's servers write their HttpProxy logs: <root>/<server>/Logging/HttpProxy/<Protocol>/."""
        assert self._tmp is not None, "start() the lab first"
        return Path(self._tmp) / "httpproxy"

    def export_httpproxy_logs(self, target: Path) -> list[Path]:
        """Copy every HttpProxy log the lab wrote so far under ``target`` (<server>/Logging/HttpProxy/...)."""
        copied = []
        for source in sorted(self.httpproxy_root.rglob("HttpProxy_*.LOG")):
            destination = target / source.relative_to(self.httpproxy_root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            copied.append(destination)
        return copied

    @property
    def command_log(self) -> list[dict[str, Any]]:
        """Every command any client sent, in order (name, parameters, user, whether it was a script)."""
        with self.endpoint.lock:
            return list(self.endpoint.command_log)

    @property
    def request_log(self) -> list[dict[str, Any]]:
        with self.endpoint.lock:
            return list(self.endpoint.request_log)

    def exchange_scan_config(self, *, auth: str | None = None) -> dict[str, Any]:
        """The ``exchange`` section of a scan configuration that points at this lab (the password is not in it).

        Kerberos and Negotiate go as Exchange's own documentation connects (http://<server FQDN>/PowerShell with
        Kerberos): HTTP with WinRM message encryption, the SPN built from the server's FQDN while the connection
        goes to the lab's loopback address (negotiate_hostname_override)."""
        assert self.exchange_endpoint is not None and self.ca_file is not None
        auth = auth or self.auth
        if auth in ("kerberos", "negotiate") and self.principal:
            return {"server": self.exchange_endpoint.host, "port": self.exchange_endpoint.http_port, "ssl": False,
                    "auth": auth, "username": self.principal, "path": self.exchange_endpoint.path,
                    "negotiate_hostname_override": self.exchange.endpoint_server.fqdn}
        return {"server": self.exchange_endpoint.host, "port": self.exchange_endpoint.https_port, "ssl": True,
                "ca_file": str(self.ca_file), "auth": auth, "username": self.credentials.username,
                "path": self.exchange_endpoint.path}

    def scan_config(self, *, auth: str | None = None) -> dict[str, Any]:
        auth = auth or self.auth
        config: dict[str, Any] = {"exchange": self.exchange_scan_config(auth=auth)}
        for service in self.services:
            config.update(getattr(service, "scan_config", {}) or {})
        if auth in ("kerberos", "negotiate") and self.principal and "os" in config:
            # Each server's WinRM is reached through os.hosts (loopback ports); the SPN is the server's FQDN.
            config["os"] = {**config["os"], "auth": auth, "username": self.principal}
        if self.scenario.options:
            config["options"] = dict(self.scenario.options)
        return config

    def secrets(self) -> dict[str, str]:
        """Secrets the demo hands to collectors in-process: never written to a file."""
        values = {"exchange.password": self.credentials.password}
        for service in self.services:
            values.update(getattr(service, "secrets", {}) or {})
        return values

    def describe(self) -> dict[str, Any]:
        assert self.exchange_endpoint is not None
        info: dict[str, Any] = {
            "scenario": self.scenario.name,
            "exchange": {"http": self.exchange_endpoint.http_url, "https": self.exchange_endpoint.https_url,
                         "configuration": "Microsoft.Exchange", "ca_file": str(self.ca_file)},
            "username": self.credentials.username,
        }
        for service in self.services:
            info.update(getattr(service, "endpoints", {}) or {})
        return info
