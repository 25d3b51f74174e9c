"""The ``exchange:`` section of the scan configuration: where the Exchange endpoint is and how to sign in."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hma_check.errors import ConfigError

AUTHS = ("kerberos", "negotiate", "ntlm", "basic", "certificate")
# The keys every WSMan section of the configuration shares (parse_connection); the OS section reuses them.
CONNECTION_KEYS = ("port", "ssl", "path", "cert_validation", "ca_file", "auth", "username", "password_env",
                   "certificate_pem", "certificate_key_pem", "negotiate_service", "negotiate_hostname_override",
                   "concurrency", "timeout", "operation_timeout", "connect_timeout")
_KEYS = ("server", *CONNECTION_KEYS, "retries")
# Keys people reach for that would put a secret into the file: refused, pointing to password_env.
_SECRET_KEYS = ("password", "pass", "secret", "credential")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# A host name, an IPv6 address in brackets or an IPv4 address (no scheme, no path, no port).
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\]|[0-9.]+")
DEFAULT_PASSWORD_ENV = "HMA_CHECK_EXCHANGE_PASSWORD"
# Exchange's default throttling policy allows 18 concurrent PowerShell sessions per user (PowerShellMaxConcurrency);
# staying at 12 leaves room for the administrator's own shells. Microsoft Learn: Set-ThrottlingPolicy.
DEFAULT_CONCURRENCY = 12
DEFAULT_RETRIES = 5


@dataclass(frozen=True)
class Connection:
    """How to reach one WSMan endpoint and sign in (CONNECTION_KEYS, validated by parse_connection); the Exchange
    and OS sections both extend it. No defaults here: ConnectionDefaults holds each section's own."""

    port: int
    ssl: bool
    path: str
    cert_validation: bool
    ca_file: Path | None
    auth: str
    username: str | None
    password_env: str
    certificate_pem: Path | None
    certificate_key_pem: Path | None
    negotiate_service: str | None
    negotiate_hostname_override: str | None
    concurrency: int
    timeout: float                  # one cmdlet call, end to end
    operation_timeout: int          # WSMan long-poll; pypsrp retries an expired Receive by itself
    connect_timeout: float

    def summary(self) -> dict[str, Any]:
        """What evidence.json records about how hma-check signed in: no secret, not even the variable's value."""
        return {"auth": self.auth, "username": self.username, "cert_validation": self.cert_validation,
                "ca_file": str(self.ca_file) if self.ca_file else None}


@dataclass(frozen=True)
class ExchangeSettings(Connection):
    server: str
    retries: int                    # attempts after throttling

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.server}:{self.port}/{self.path}"

    def summary(self) -> dict[str, Any]:
        return {"url": self.url, **super().summary()}


def parse_exchange_section(raw: Any, context: Any) -> ExchangeSettings:
    fail = context.fail
    if not isinstance(raw, dict):
        raise fail((), "must be a mapping with at least 'server'")
    check_keys(raw, _KEYS, fail)
    server = _text(raw.get("server"), ("server",), fail)
    if not HOST.fullmatch(server):
        raise fail(("server",), "must be a host name or address (no scheme, no path)")
    connection = parse_connection(raw, context, EXCHANGE_DEFAULTS)
    return ExchangeSettings(server=server, **connection,
                            retries=_int(raw.get("retries", DEFAULT_RETRIES), ("retries",), 0, 20, fail))


@dataclass(frozen=True)
class ConnectionDefaults:
    """What a WSMan section assumes when a key is left out (the Exchange endpoint and WinRM differ)."""

    ssl: bool
    https_port: int
    http_port: int
    path: str
    password_env: str
    concurrency: int
    timeout: int


EXCHANGE_DEFAULTS = ConnectionDefaults(ssl=True, https_port=443, http_port=80, path="PowerShell",
                                       password_env=DEFAULT_PASSWORD_ENV, concurrency=DEFAULT_CONCURRENCY, timeout=120)


def check_keys(raw: dict[str, Any], allowed: tuple[str, ...], fail: Any) -> None:
    """Refuse a key that would hold a secret (pointing to password_env) and any key the section does not know."""
    for key in raw:
        if str(key).lower() in _SECRET_KEYS:
            raise fail((key,), "secrets never go in the configuration file: set password_env to the name of an "
                               "environment variable that holds the password (or let hma-check prompt)")
        if key not in allowed:
            raise fail((key,), f"unknown key; expected one of: {', '.join(allowed)}")


def parse_connection(raw: dict[str, Any], context: Any, defaults: ConnectionDefaults) -> dict[str, Any]:
    """The keys every WSMan section shares (CONNECTION_KEYS): how to reach an endpoint and sign in, validated."""
    fail = context.fail
    ssl = _bool(raw.get("ssl", defaults.ssl), ("ssl",), fail)
    port = _int(raw.get("port", defaults.https_port if ssl else defaults.http_port), ("port",), 1, 65535, fail)
    auth = raw.get("auth", "negotiate")
    if auth not in AUTHS:
        raise fail(("auth",), f"must be one of: {', '.join(AUTHS)}")
    if auth == "basic" and not ssl:
        raise fail(("auth",), "basic sends the password in clear: it is allowed over TLS only (ssl: true)")
    if auth == "certificate" and not ssl:
        raise fail(("auth",), "certificate authentication needs ssl: true")
    username = raw.get("username")
    if auth != "certificate" and username is None and auth in ("basic", "ntlm"):
        raise fail(("username",), f"{auth} needs a username (DOMAIN\\user or user@domain)")
    if username is not None:
        username = _text(username, ("username",), fail)
    password_env = raw.get("password_env", defaults.password_env)
    if not isinstance(password_env, str) or not _ENV_NAME.fullmatch(password_env):
        raise fail(("password_env",), "must be the name of an environment variable")
    cert_validation = _bool(raw.get("cert_validation", True), ("cert_validation",), fail)
    ca_file = _file(raw.get("ca_file"), ("ca_file",), context)
    cert_pem = _file(raw.get("certificate_pem"), ("certificate_pem",), context)
    key_pem = _file(raw.get("certificate_key_pem"), ("certificate_key_pem",), context)
    if auth == "certificate" and (cert_pem is None or key_pem is None):
        raise fail(("auth",), "certificate authentication needs certificate_pem and certificate_key_pem")
    path = _text(raw.get("path", defaults.path), ("path",), fail).strip("/")
    if not re.fullmatch(r"[A-Za-z0-9_./-]+(\?[A-Za-z0-9_=&.-]*)?", path):
        raise fail(("path",), f"must be a URL path such as {defaults.path}")
    return dict(
        port=port, ssl=ssl, path=path, cert_validation=cert_validation, ca_file=ca_file, auth=auth,
        username=username, password_env=password_env, certificate_pem=cert_pem, certificate_key_pem=key_pem,
        negotiate_service=_optional_text(raw.get("negotiate_service"), ("negotiate_service",), fail),
        negotiate_hostname_override=_optional_text(raw.get("negotiate_hostname_override"),
                                                   ("negotiate_hostname_override",), fail),
        concurrency=_int(raw.get("concurrency", defaults.concurrency), ("concurrency",), 1, 64, fail),
        timeout=float(_int(raw.get("timeout", defaults.timeout), ("timeout",), 1, 3600, fail)),
        operation_timeout=_int(raw.get("operation_timeout", 20), ("operation_timeout",), 1, 600, fail),
        connect_timeout=float(_int(raw.get("connect_timeout", 30), ("connect_timeout",), 1, 600, fail)))


def require_auth_support(settings: ExchangeSettings) -> None:
    """Kerberos needs python-gssapi (the 'kerberos' extra); say so in one line before anything is sent."""
    if settings.auth == "kerberos" and importlib.util.find_spec("gssapi") is None:
        raise ConfigError("exchange.auth is kerberos but python-gssapi is not installed: install the extra with "
                          "pip install 'hma-check[kerberos]' (needs the system's MIT or Heimdal krb5 libraries), "
                          "or use auth: negotiate, ntlm or basic over TLS")


def _text(value: Any, where: tuple[Any, ...], fail: Any) -> str:
    if not isinstance(value, str) or not value.strip() or any(ord(ch) < 32 for ch in value):
        raise fail(where, "must be a non-empty string on one line")
    return value.strip()


def _optional_text(value: Any, where: tuple[Any, ...], fail: Any) -> str | None:
    return None if value is None else _text(value, where, fail)


def _bool(value: Any, where: tuple[Any, ...], fail: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(where, "must be true or false")
    return value


def _int(value: Any, where: tuple[Any, ...], low: int, high: int, fail: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise fail(where, f"must be an integer from {low} to {high}")
    return value


def _file(value: Any, where: tuple[Any, ...], context: Any) -> Path | None:
    if value is None:
        return None
    path = context.path(_text(value, where, context.fail))
    if not path.is_file():
        raise context.fail(where, f"no such file: {path}")
    return path
