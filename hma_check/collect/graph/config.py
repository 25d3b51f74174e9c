"""The ``graph:`` section of the scan configuration: which tenants to read, how to sign in, which cloud."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from hma_check.errors import ConfigError

CREDENTIALS = ("client_secret", "certificate", "device_code", "azure_cli", "managed_identity", "default")


@dataclass(frozen=True)
class Cloud:
    authority: str  # the Entra sign-in host
    graph: str      # the Graph service root, also the token resource


# Sign-in and Graph hosts per national cloud:
# https://learn.microsoft.com/graph/deployments#microsoft-graph-and-graph-explorer-service-root-endpoints
# https://learn.microsoft.com/entra/identity-platform/authentication-national-cloud#microsoft-entra-authentication-endpoints
CLOUDS: dict[str, Cloud] = {
    "global": Cloud("https://login.microsoftonline.com", "https://graph.microsoft.com"),
    "usgov": Cloud("https://login.microsoftonline.us", "https://graph.microsoft.us"),
    "usgov-dod": Cloud("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    "china": Cloud("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SHARED_KEYS = {"credential", "client_id", "client_secret_env", "certificate_path", "certificate_password_env",
                "cloud", "authority", "graph_url", "ca_bundle", "timeout"}
_KEYS = _SHARED_KEYS | {"tenant_id", "tenants"}
# Keys people reach for that would put a secret into a file: refused with a pointer to the *_env form.
_SECRET_KEYS = {"client_secret": "client_secret_env", "secret": "client_secret_env",
                "certificate_password": "certificate_password_env", "password": "certificate_password_env"}


@dataclass(frozen=True)
class GraphTarget:
    """One tenant to read and how to sign in to it. Secrets stay in the environment; only their names are here."""

    tenant_id: str
    credential: str = "client_secret"
    client_id: str | None = None
    client_secret_env: str | None = None
    certificate_path: Path | None = None
    certificate_password_env: str | None = None
    cloud: str = "global"
    authority: str | None = None   # overrides the cloud's sign-in host (a proxy, the lab)
    graph_url: str | None = None   # overrides the cloud's Graph root, including /v1.0
    ca_bundle: Path | None = None  # trust these CAs for sign-in and Graph (TLS verification stays on)
    timeout: float = 60.0

    @property
    def authority_url(self) -> str:
        return (self.authority or CLOUDS[self.cloud].authority).rstrip("/")

    @property
    def graph_root(self) -> str:
        return (self.graph_url or f"{CLOUDS[self.cloud].graph}/v1.0").rstrip("/")

    @property
    def scope(self) -> str:
        # The token resource is the cloud's Graph, even when requests go to an override URL (a proxy or the lab).
        return f"{CLOUDS[self.cloud].graph}/.default"

    @property
    def custom_authority(self) -> bool:
        """MSAL's instance discovery only knows Microsoft's hosts; any other authority must skip it."""
        known = {urlsplit(c.authority).hostname for c in CLOUDS.values()}
        return urlsplit(self.authority_url).hostname not in known


Where = tuple[Any, ...]
Fail = Callable[[Where, str], ConfigError]


@dataclass(frozen=True)
class GraphSettings:
    """The validated ``graph:`` section: one target per tenant."""

    targets: tuple[GraphTarget, ...]

    def summary(self) -> dict[str, Any]:
        """What evidence.json's target records (ids and hosts, never a secret)."""
        return {"tenants": [t.tenant_id for t in self.targets],
                "clouds": sorted({t.cloud for t in self.targets}),
                "graph": sorted({t.graph_root for t in self.targets})}


def parse_graph(raw: Any, context: Any) -> GraphSettings:
    """The scan configuration's section parser (hma_check.collect.config.SECTIONS): positions come from ``context``."""
    return GraphSettings(tuple(parse_graph_section(raw, fail=lambda where, message: context.fail(where[1:], message),
                                                   base_dir=context.base_dir)))


def parse_graph_section(raw: Any, *, fail: Fail | None = None, base_dir: str | Path = ".") -> list[GraphTarget]:
    """Validate ``graph:`` and return one target per tenant. Top-level keys are defaults for ``tenants:`` entries.

    ``graph: {tenant_id: ..., client_id: ..., client_secret_env: ...}`` reads one tenant;
    ``graph: {credential: ..., tenants: [{tenant_id: ..., client_id: ...}, ...]}`` reads several (multi-tenant hybrid).
    ``fail(where, message)`` makes the error (the configuration loader adds file and line); relative paths are
    taken from ``base_dir``, the configuration file's folder.
    """
    fail = fail or _plain_fail
    base = Path(base_dir)
    if raw is None:
        return []
    _check_keys(raw, ("graph",), _KEYS, fail)
    shared = {k: v for k, v in raw.items() if k in _SHARED_KEYS}
    if "tenants" in raw:
        if "tenant_id" in raw:
            raise fail(("graph", "tenant_id"), "give tenant_id either at the top or in each tenants entry, not both")
        entries = raw["tenants"]
        if not isinstance(entries, list) or not entries:
            raise fail(("graph", "tenants"), "must be a non-empty list of {tenant_id, ...}")
        located: list[tuple[Where, dict[str, Any]]] = []
        for i, entry in enumerate(entries):
            _check_keys(entry, ("graph", "tenants", i), _SHARED_KEYS | {"tenant_id"}, fail)
            located.append((("graph", "tenants", i), {**shared, **entry}))
    else:
        located = [(("graph",), dict(shared, tenant_id=raw.get("tenant_id")))]
    targets = []
    seen: set[str] = set()
    for at, values in located:
        target = _target(values, at, base, fail)
        if target.tenant_id in seen:
            raise fail((*at, "tenant_id"), f"tenant {target.tenant_id} is listed twice")
        seen.add(target.tenant_id)
        targets.append(target)
    return targets


def _plain_fail(where: Where, message: str) -> ConfigError:
    from hma_check.util.yaml_source import dotted

    return ConfigError(f"{dotted(where)}: {message}")


def _check_keys(obj: Any, at: Where, allowed: set[str], fail: Fail) -> None:
    if not isinstance(obj, dict):
        raise fail(at, "must be a mapping")
    for key in obj:
        if key in _SECRET_KEYS:
            raise fail((*at, key), f"secrets are never written in the configuration: put the value in an "
                                   f"environment variable and name it in {_SECRET_KEYS[key]}")
        if key not in allowed:
            raise fail((*at, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _target(values: dict[str, Any], at: Where, base: Path, fail: Fail) -> GraphTarget:
    def where(key: str) -> Where:
        return (*at, key)

    tenant_id = values.get("tenant_id")
    if not isinstance(tenant_id, str) or not _GUID.match(tenant_id):
        raise fail(where("tenant_id"), f"must be the tenant id (a GUID), got {tenant_id!r}")
    credential = values.get("credential", "client_secret")
    if credential not in CREDENTIALS:
        raise fail(where("credential"), f"must be one of {', '.join(CREDENTIALS)}, got {credential!r}")
    cloud = values.get("cloud", "global")
    if cloud not in CLOUDS:
        raise fail(where("cloud"), f"must be one of {', '.join(CLOUDS)}, got {cloud!r}")
    client_id = values.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or not _GUID.match(client_id)):
        raise fail(where("client_id"), f"must be the application (client) id, a GUID, got {client_id!r}")
    if credential in ("client_secret", "certificate") and client_id is None:
        raise fail(where("client_id"), f"credential {credential} needs the app registration's client_id")
    secret_env = _env_name(values.get("client_secret_env"), where("client_secret_env"), fail)
    if credential == "client_secret" and secret_env is None:
        raise fail(where("client_secret_env"), "credential client_secret needs the name of the environment variable "
                                               "that holds the secret")
    password_env = _env_name(values.get("certificate_password_env"), where("certificate_password_env"), fail)
    certificate = _file(values.get("certificate_path"), where("certificate_path"), base, fail)
    if credential == "certificate" and certificate is None:
        raise fail(where("certificate_path"), "credential certificate needs certificate_path (PEM with the private "
                                              "key, or PFX)")
    timeout = values.get("timeout", 60.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 600:
        raise fail(where("timeout"), "must be a number of seconds from 1 to 600")
    return GraphTarget(
        tenant_id=tenant_id.lower(), credential=credential, client_id=client_id.lower() if client_id else None,
        client_secret_env=secret_env, certificate_path=certificate, certificate_password_env=password_env,
        cloud=cloud, authority=_https_url(values.get("authority"), where("authority"), fail, path_ok=False),
        graph_url=_graph_url(values.get("graph_url"), where("graph_url"), fail),
        ca_bundle=_file(values.get("ca_bundle"), where("ca_bundle"), base, fail), timeout=float(timeout))


def _env_name(value: Any, at: Where, fail: Fail) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise fail(at, "must be the name of an environment variable (letters, digits, _), not its value")
    return value


def _file(value: Any, at: Where, base: Path, fail: Fail) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise fail(at, "must be a file path")
    file = Path(os.path.expanduser(value))
    file = file if file.is_absolute() else base / file
    if not file.is_file():
        raise fail(at, f"no such file: {file}")
    if not os.access(file, os.R_OK):
        raise fail(at, f"cannot read {file}")
    return file


def _https_url(value: Any, at: Where, fail: Fail, *, path_ok: bool) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment \
            or parts.username or parts.password:
        raise fail(at, f"must be an https:// URL without credentials or query, got {str(value)[:100]!r}")
    if not path_ok and parts.path.strip("/"):
        raise fail(at, "must be the sign-in host only (https://host[:port]); the tenant is added per request")
    return value.rstrip("/")


def _graph_url(value: Any, at: Where, fail: Fail) -> str | None:
    url = _https_url(value, at, fail, path_ok=True)
    if url is None:
        return None
    # hma-check reads v1.0 only; a bare host means its v1.0 root.
    path = urlsplit(url).path.strip("/")
    if path == "":
        return f"{url}/v1.0"
    if path.split("/")[-1] != "v1.0":
        raise fail(at, "must end in /v1.0 (hma-check reads the v1.0 endpoint only) or be a bare host")
    return url


def secret_values(targets: list[GraphTarget], environ: Mapping[str, str]) -> list[str]:
    """Every secret the targets read from the environment: scrubbed from any text the collector writes."""
    names = {t.client_secret_env for t in targets} | {t.certificate_password_env for t in targets}
    return [environ[n] for n in names if n and environ.get(n)]
