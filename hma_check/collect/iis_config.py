"""IIS 'Require SSL' of Exchange's HMA virtual directories, read from applicationHost.config as the server holds it.

IIS stores the access section (sslFlags) of each path of the Default Web Site in a <location> element of
%windir%\\System32\\inetsrv\\config\\applicationHost.config: the section is locked there (overrideModeDefault="Deny"),
so no web.config of the virtual directory can change it. A path without its own value inherits the site's, then the
server's; the schema's default is None (HTTP accepted). 'Ssl' among the flags is IIS Manager's "Require SSL".
https://learn.microsoft.com/iis/configuration/system.webserver/security/access
"""

from __future__ import annotations

from typing import Any
from xml.parsers import expat

from hma_check.errors import HmaCheckError

APPLICATION_HOST = "C:\\Windows\\System32\\inetsrv\\config\\applicationHost.config"
SITE = "Default Web Site"
# The front-end paths HMA clients use (the Outlook Anywhere path /rpc is Outlook Anywhere's own: not here).
HMA_PATHS = ("mapi", "EWS", "Autodiscover", "OAB", "Microsoft-Server-ActiveSync")
MAX_CONFIG_CHARACTERS = 16 * 1024 * 1024


class ApplicationHostError(HmaCheckError, ValueError):
    """applicationHost.config that cannot be read as IIS writes it."""


def hma_ssl_flags(config_text: str) -> dict[str, dict[str, Any]]:
    """{'/mapi': {'sslFlags': 'Ssl, Ssl128', 'RequireSsl': True, 'Location': 'Default Web Site/mapi'}, ...}: the
    effective value for each HMA path and the <location> path it comes from ('' the server level, null the IIS
    default None)."""
    values = _access_flags(config_text)
    out: dict[str, dict[str, Any]] = {}
    for path in HMA_PATHS:
        location: str | None = None
        flags = "None"
        for candidate in (f"{SITE}/{path}", SITE, ""):
            if candidate.lower() in values:
                location, flags = values[candidate.lower()]
                break
        tokens = {token.strip().lower() for token in flags.split(",")}
        out[f"/{path}"] = {"sslFlags": flags, "RequireSsl": "ssl" in tokens, "Location": location}
    return out


def _access_flags(config_text: str) -> dict[str, tuple[str, str]]:
    """(location path as written, sslFlags) of system.webServer/security/access by lower-case location path ('' for
    the server level)."""
    if len(config_text) > MAX_CONFIG_CHARACTERS:
        raise ApplicationHostError(f"applicationHost.config is {len(config_text)} characters; the limit is "
                          f"{MAX_CONFIG_CHARACTERS}")
    found: dict[str, tuple[str, str]] = {}
    roots: list[str] = []
    stack: list[str] = []
    locations: list[str | None] = []
    parser = expat.ParserCreate()

    def refuse(*_: Any) -> None:
        raise ApplicationHostError("applicationHost.config declares a DTD or entities, which IIS never writes")

    def start(name: str, attrs: dict[str, str]) -> None:
        if not stack:
            roots.append(name)
        stack.append(name)
        locations.append(attrs.get("path", "").strip().strip("/") if name == "location" else None)
        if stack[-3:] == ["system.webServer", "security", "access"] and "sslFlags" in attrs:
            where = next((loc for loc in reversed(locations) if loc is not None), "")
            found[where.lower()] = (where, attrs["sslFlags"])

    def end(name: str) -> None:
        stack.pop()
        locations.pop()

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(config_text.lstrip("\ufeff"), True)
    except expat.ExpatError as exc:
        raise ApplicationHostError(f"applicationHost.config is not well-formed XML: {expat.errors.messages.get(exc.code, exc)} "
                          f"at line {exc.lineno}") from None
    if roots != ["configuration"]:
        raise ApplicationHostError("this is not an IIS applicationHost.config (no <configuration> root)")
    return found
