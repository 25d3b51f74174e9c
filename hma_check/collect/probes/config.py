"""The ``probes:`` section of the scan configuration, and curl's --resolve / --connect-to syntax."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from hma_check.errors import ConfigError

DEFAULT_TIMEOUT = 10.0
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64
MAX_TIMEOUT = 300.0

# A DNS host name (RFC 1123 labels, an optional trailing dot). Anything else (spaces, CR/LF, '@', '/') is refused
# so a hostile value can reach neither a request line nor a header.
_HOST = re.compile(r"(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}"
                   r"[A-Za-z0-9_])?)*\.?")
_EMAIL = re.compile(r"[^@\s\"<>(),;:\\\[\]]{1,64}@[A-Za-z0-9.-]{1,253}")
_KEYS = {"enabled", "hosts", "resolve", "connect_to", "ca_bundle", "timeout", "concurrency", "autodiscover_email"}


@dataclass(frozen=True)
class ResolveRule:
    """``--resolve host:port:address[,address…]``: connect to these addresses for host:port. Unlike curl, which
    treats extra addresses as fallbacks, every address is probed: that is how each node behind a load balancer
    is reached by name."""

    host: str
    port: int
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class ConnectTo:
    """``--connect-to HOST1:PORT1:HOST2:PORT2`` as curl has it: a request for HOST1:PORT1 connects to HOST2:PORT2
    (empty HOST1/PORT1 match any; empty HOST2/PORT2 keep the original). Repeating one HOST1:PORT1 adds nodes."""

    host: str | None
    port: int | None
    to_host: str | None
    to_port: int | None

    def matches(self, host: str, port: int) -> bool:
        return (self.host is None or self.host == host) and (self.port is None or self.port == port)


@dataclass(frozen=True)
class ProbeSettings:
    enabled: bool = True
    hosts: tuple[tuple[str, int], ...] = ()
    resolve: tuple[ResolveRule, ...] = ()
    connect_to: tuple[ConnectTo, ...] = ()
    ca_bundle: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    autodiscover_email: str | None = None


    def summary(self) -> dict[str, Any]:
        """For the evidence's target summary: what was asked, never a secret (probes hold none)."""
        return {"hosts": [f"{host}:{port}" for host, port in self.hosts], "resolve": len(self.resolve),
                "connect_to": len(self.connect_to), "ca_bundle": self.ca_bundle is not None}


Where = tuple  # a key path inside the section: ("hosts", 0)
Fail = Callable[[Where, str], ConfigError]


def parse_probes_section(raw: Any, context: Any) -> ProbeSettings:
    """The scan configuration's ``probes:`` parser (hma_check.collect.config.SECTIONS): ``context.fail`` positions an
    error at the file and line of a key path, ``context.path`` resolves ca_bundle against the file's folder."""
    return parse_probe_settings(raw, fail=context.fail, resolve_path=lambda value: str(context.path(value)))


def parse_probe_settings(raw: Any, *, fail: Fail | None = None, path: str | None = None,
                         resolve_path: Callable[[str], str] | None = None) -> ProbeSettings:
    """Validate the ``probes:`` mapping (None means all defaults); every problem is one ConfigError naming the key.
    Without ``fail`` the message names the key path (``probes.hosts[0]: …``) and ``path``, the file."""
    if raw is None:
        return ProbeSettings()
    fail = fail or _plain_fail(path)
    if not isinstance(raw, Mapping):
        raise fail((), "must be a mapping")
    for key in raw:
        if key not in _KEYS:
            raise fail((key,), f"unknown key (known: {', '.join(sorted(_KEYS))})")

    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise fail(("enabled",), "must be true or false")
    hosts = tuple(_host_port(item, fail, ("hosts", i)) for i, item in enumerate(_string_list(raw, "hosts", fail)))
    resolve = tuple(_resolve(item, fail, ("resolve", i))
                    for i, item in enumerate(_string_list(raw, "resolve", fail)))
    connect_to = tuple(_connect_to(item, fail, ("connect_to", i))
                       for i, item in enumerate(_string_list(raw, "connect_to", fail)))
    ca_bundle = raw.get("ca_bundle")
    if ca_bundle is not None:
        if not isinstance(ca_bundle, str) or not ca_bundle:
            raise fail(("ca_bundle",), "must be the path of a PEM file")
        ca_bundle = resolve_path(ca_bundle) if resolve_path else ca_bundle
        if not os.path.isfile(ca_bundle) or not os.access(ca_bundle, os.R_OK):
            raise fail(("ca_bundle",), f"cannot read {ca_bundle!r}")
        try:
            ssl.create_default_context(cafile=ca_bundle)
        except (ssl.SSLError, ValueError) as exc:
            raise fail(("ca_bundle",), f"{ca_bundle!r} holds no PEM certificate OpenSSL can load ({exc})") from None
    timeout = _number(raw, "timeout", DEFAULT_TIMEOUT, fail)
    if not 0 < timeout <= MAX_TIMEOUT:
        raise fail(("timeout",), f"must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    concurrency = raw.get("concurrency", DEFAULT_CONCURRENCY)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise fail(("concurrency",), f"must be a whole number from 1 to {MAX_CONCURRENCY}")
    email = raw.get("autodiscover_email")
    if email is not None and (not isinstance(email, str) or not _EMAIL.fullmatch(email)):
        raise fail(("autodiscover_email",), "must be one SMTP address (user@domain)")
    return ProbeSettings(enabled=enabled, hosts=hosts, resolve=resolve, connect_to=connect_to, ca_bundle=ca_bundle,
                         timeout=float(timeout), concurrency=concurrency, autodiscover_email=email)


def parse_resolve(text: str) -> ResolveRule:
    """One ``--resolve`` value from the command line; ConfigError when malformed."""
    return _resolve(text, lambda where, message: ConfigError(f"--resolve {text!r}: {message}"), ())


def parse_connect_to(text: str) -> ConnectTo:
    """One ``--connect-to`` value from the command line; ConfigError when malformed."""
    return _connect_to(text, lambda where, message: ConfigError(f"--connect-to {text!r}: {message}"), ())


def with_command_line(settings: ProbeSettings | None, resolve: tuple[str, ...] = (),
                      connect_to: tuple[str, ...] = ()) -> ProbeSettings:
    """``--resolve``/``--connect-to`` from the command line, ahead of the file's (the first match wins, as in curl);
    either one turns the probes on when the file has no probes: section."""
    settings = settings or ProbeSettings()
    return replace(settings, resolve=tuple(parse_resolve(text) for text in resolve) + settings.resolve,
                   connect_to=tuple(parse_connect_to(text) for text in connect_to) + settings.connect_to)


def _plain_fail(path: str | None) -> Fail:
    def fail(where: Where, message: str) -> ConfigError:
        from hma_check.util.yaml_source import dotted

        return ConfigError(f"{dotted(('probes', *where))}: {message}", path=path)
    return fail


def normalise_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


def is_host_name(text: str) -> bool:
    return bool(_HOST.fullmatch(text))


# ------------------------------------------------------------------------------------------------- helpers
def _string_list(raw: Mapping[str, Any], key: str, fail: Fail) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise fail((key,), "must be a list of strings")
    return value


def _number(raw: Mapping[str, Any], key: str, default: float, fail: Fail) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise fail((key,), "must be a number of seconds")
    return float(value)


def _host(text: str, fail: Fail, key: Where) -> str:
    if not _HOST.fullmatch(text):
        raise fail(key, f"{text!r} is not a host name")
    return normalise_host(text)


def _port(text: str, fail: Fail, key: Where) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise fail(key, f"{text!r} is not a port number")
    return int(text)


def _address(text: str, fail: Fail, key: Where) -> str:
    """An IP address, with or without the [brackets] curl uses for IPv6."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        raise fail(key, f"{text!r} is not an IP address") from None


def _host_port(text: str, fail: Fail, key: Where) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        return _host(text.strip(), fail, key), 443
    return _host(host, fail, key), _port(port, fail, key)


def _split(text: str) -> list[str]:
    """Split on ':' outside [brackets], so '[::1]' stays one field."""
    return [part for part in re.split(r":(?![^\[]*\])", text)]


def _resolve(text: str, fail: Fail, key: Where) -> ResolveRule:
    parts = _split(text.strip())
    if len(parts) != 3:
        raise fail(key, "must be HOST:PORT:ADDRESS[,ADDRESS...]")
    host, port, addresses = parts
    return ResolveRule(_host(host, fail, key), _port(port, fail, key),
                       tuple(_address(address.strip(), fail, key) for address in addresses.split(",")))


def _connect_to(text: str, fail: Fail, key: Where) -> ConnectTo:
    parts = _split(text.strip())
    if len(parts) != 4:
        raise fail(key, "must be HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT (curl's --connect-to)")
    host, port, to_host, to_port = parts
    if to_host.startswith("["):
        to_host = _address(to_host, fail, key)
    elif to_host:
        try:
            to_host = str(ipaddress.ip_address(to_host))
        except ValueError:
            to_host = _host(to_host, fail, key)
    return ConnectTo(host=_host(host, fail, key) if host else None, port=_port(port, fail, key) if port else None,
                     to_host=to_host or None, to_port=_port(to_port, fail, key) if to_port else None)
