"""The one sandboxed Jinja2 environment for check expressions and templates, with its few filters and tests.

Expressions run in ImmutableSandboxedEnvironment with StrictUndefined: a property that is not in the evidence raises
instead of reading as empty, and nothing in a checks file can mutate data or reach Python internals.
Evaluation goes through compile_expression()/compile_template() so the language could be swapped later.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from jinja2 import StrictUndefined, nodes, pass_context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hma_check.evaluate.filters import client_impact, entra, exchange_builds, tls
from hma_check.contract.snapshot import parse_utc

# ------------------------------------------------------------------------------------------- PowerShell quoting

# PowerShell treats the typographic single quotes as quote characters too
# (about_Quoting_Rules), so each must be doubled like ' or it would end the string.
_PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def ps_quote(value: Any) -> str:
    """One PowerShell string literal for any value: '...' with quotes doubled.

    Control characters (a newline could end a comment line and start a command) are spliced in as [char]N, so the
    result is always a single line and a single expression.
    """
    if value is None:
        return "$null"
    text = value if isinstance(value, str) else str(value)
    pieces: list[str] = []
    literal: list[str] = []
    for ch in text:
        if ch in _PS_SINGLE_QUOTES:
            literal.append(ch + ch)
        elif _is_control(ch):
            pieces.append("'" + "".join(literal) + "'")
            literal = []
            pieces.append(f"[char]{ord(ch)}")
        else:
            literal.append(ch)
    pieces.append("'" + "".join(literal) + "'")
    if len(pieces) == 1:
        return pieces[0]
    return "(" + " + ".join(p for p in pieces if p != "''") + ")"


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029"


def ps_list(values: Any) -> str:
    """@('a','b'): a PowerShell array of string literals (an empty list is @())."""
    if values is None:
        return "@()"
    if isinstance(values, (str, bytes)):
        values = [values]
    return "@(" + ",".join(ps_quote(v) for v in values) + ")"


def ps_bool(value: Any) -> str:
    if not isinstance(value, bool):
        raise TypeError(f"ps_bool needs true or false, not {value!r}")
    return "$true" if value else "$false"


def ps_int(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ps_int needs an integer, not {value!r}")
    return str(value)


# Filters whose output is safe to splice into PowerShell: enable/rollback templates may only use these.
PS_SAFE_FILTERS = frozenset({"ps_quote", "ps_list", "ps_bool", "ps_int"})

# ----------------------------------------------------------------------------------------------- date helpers


def to_datetime(value: Any) -> datetime:
    """A date from the evidence (ISO 8601 text) or a YAML date, in UTC; no time zone means UTC."""
    if isinstance(value, str):
        return parse_utc(value.strip())
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    else:
        raise TypeError(f"not a date: {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


@pass_context
def days_until(context: Any, value: Any) -> int:
    """Whole days from the evaluation time (``now``: the evidence's collected_at) to a date; negative when past."""
    delta = to_datetime(value) - to_datetime(context["now"])
    return int(delta.total_seconds() // 86400)


# ------------------------------------------------------------------------------------------------- URL helpers


def url_host(value: Any) -> str:
    """The lower-case host of a URL ('https://Mail.Contoso.com/mapi' -> 'mail.contoso.com'); '' for none."""
    if value is None or value == "":
        return ""
    text = str(value).strip()
    if "://" not in text:
        text = "https://" + text
    host = urlsplit(text).hostname or ""
    return host.rstrip(".").lower()


def spn_form(host: Any) -> str:
    """The servicePrincipalNames entry HMA needs for a host: https://host/ (lower case, trailing slash)."""
    return f"https://{url_host(host)}/"


def https_url(host: Any, path: str = "/") -> str:
    """https://host/path for a host or URL (lower case): the reply URL form, e.g. https://mail.contoso.com/owa."""
    return f"https://{url_host(host)}{path}".lower()


def url_key(url: Any) -> str:
    """A URL compared the way Entra ID matches reply URLs here: case-insensitive, a trailing slash ignored."""
    return "" if url is None else str(url).strip().lower().rstrip("/")


def spn_hosts(service_principal_names: Iterable[Any]) -> frozenset[str]:
    """Hosts registered as https:// SPNs; the '00000002-.../host' form does not count for HMA (seed 003)."""
    hosts = set()
    for name in service_principal_names or []:
        text = str(name).strip()
        if text.lower().startswith("https://"):
            host = url_host(text)
            if host:
                hosts.add(host)
    return frozenset(hosts)


def covers(names: Iterable[Any], host: Any) -> bool:
    """True when a certificate name list covers a host (exact, or a single-label wildcard like *.contoso.com)."""
    host_text = url_host(host)
    for name in names or []:
        pattern = str(name).strip().rstrip(".").lower()
        if pattern == host_text:
            return True
        if pattern.startswith("*.") and "." in host_text:
            if host_text.split(".", 1)[1] == pattern[2:]:
                return True
    return False


# ------------------------------------------------------------------------------------------ collection helpers


def flatten(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, (list, tuple)):
            out.extend(value)
        else:
            out.append(value)
    return out


def toset(values: Iterable[Any]) -> frozenset[Any]:
    """A frozenset, for fast 'in' tests against big lists (50,000 users)."""
    return frozenset(values)


def lower_all(values: Iterable[Any]) -> list[str]:
    return [str(v).lower() for v in values if v is not None]


def contains_ci(values: Iterable[Any] | None, wanted: Any) -> bool:
    """Case-insensitive membership, as PowerShell's -contains compares strings."""
    if values is None:
        return False
    target = str(wanted).lower()
    return any(str(v).lower() == target for v in values)


def setting(parameters: Iterable[Any] | None, name: str) -> str | None:
    """The value of 'Name=Value' in a SettingOverride's Parameters list (None when absent)."""
    for entry in parameters or []:
        key, sep, value = str(entry).partition("=")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


# --------------------------------------------------------------------------------------------- build helpers


def exchange_build(value: Any) -> str:
    return exchange_builds.format_build(exchange_builds.parse_build(value))


def exchange_product(value: Any) -> str:
    return exchange_builds.describe(exchange_build(value)).product


def exchange_release(value: Any) -> str:
    info = exchange_builds.describe(exchange_build(value))
    return info.name if info.product != "unknown" else f"unknown build {exchange_build(value)}"


def exchange_end_of_support(value: Any) -> str | None:
    eos = exchange_builds.describe(exchange_build(value)).end_of_support
    return eos.isoformat() if eos else None


def hma_minimum(value: Any) -> str | None:
    return exchange_builds.HMA_MINIMUM.get(exchange_product(value))


def supported_cu_floor(value: Any) -> str | None:
    return exchange_builds.SUPPORTED_CU_FLOOR.get(exchange_product(value))


def version_ge(value: Any, other: Any) -> bool:
    return exchange_builds.version_key(value) >= exchange_builds.version_key(other)


def version_lt(value: Any, other: Any) -> bool:
    return exchange_builds.version_key(value) < exchange_builds.version_key(other)


def matching(value: Any, pattern: str) -> bool:
    """A case-insensitive full regular-expression match, as PowerShell's -match is case-insensitive."""
    return value is not None and re.fullmatch(pattern, str(value), re.IGNORECASE) is not None


def require(value: Any, reason: str) -> Any:
    """Return ``value``, or stop the evaluation with ERROR and ``reason`` when it is None or empty.

    For facts a check cannot decide without: ``require(certs, 'the Auth certificate is on no server collected')``.
    """
    from hma_check.evaluate.facts import MissingFact

    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        raise MissingFact("evidence", reason)
    return value


# ----------------------------------------------------------------------------------------- the environment


class CheckEnvironment(ImmutableSandboxedEnvironment):
    """Evidence dicts are read key-first, so a property named like a dict method ('items') still reads as data."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


FILTERS: dict[str, Callable[..., Any]] = {
    "ps_quote": ps_quote, "ps_list": ps_list, "ps_bool": ps_bool, "ps_int": ps_int,
    "url_host": url_host, "spn_form": spn_form, "spn_hosts": spn_hosts, "https_url": https_url, "url_key": url_key,
    "flatten": flatten, "toset": toset, "lower_all": lower_all, "setting": setting,
    "exchange_build": exchange_build, "exchange_product": exchange_product, "exchange_release": exchange_release,
    "exchange_end_of_support": exchange_end_of_support, "hma_minimum": hma_minimum,
    "supported_cu_floor": supported_cu_floor,
    "tls_state": tls.tls_state, "tls_dotnet_strong": tls.dotnet_strong_crypto, "tls_odd_values": tls.odd_values,
    "tls13_supported": tls.tls13_supported, "days_until": days_until,
    "ca_legacy_block": entra.legacy_block_state, "ca_describe": entra.describe_policy,
    "client_users": client_impact.client_users, "client_summary": client_impact.client_summary,
    "server_row": client_impact.server_row, "bearer_share": client_impact.bearer_share,
}
TESTS: dict[str, Callable[..., bool]] = {
    "version_ge": version_ge, "version_lt": version_lt,
    "covered_by": lambda host, names: covers(names, host),
    "contains_ci": contains_ci,
    "matching": matching,
    "ca_applies_to_exchange": entra.applies_to_exchange_clients,
}
GLOBALS: dict[str, Callable[..., Any]] = {"require": require}
def make_environment() -> CheckEnvironment:
    env = CheckEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    env.globals.update(GLOBALS)
    return env


ENVIRONMENT = make_environment()


def compile_expression(source: str) -> Callable[..., Any]:
    """Compile once; call with the context as keyword arguments. Raises jinja2.TemplateSyntaxError."""
    return ENVIRONMENT.compile_expression(source, undefined_to_none=False)


def compile_template(source: str) -> Any:
    return ENVIRONMENT.from_string(source)


def parse(source: str, *, expression: bool) -> nodes.Template:
    """The AST, for static checks (which sources and item properties a check uses, PowerShell quoting)."""
    if expression:
        return ENVIRONMENT.parse("{{ (" + source + ") }}")
    return ENVIRONMENT.parse(source)


def referenced_sources(tree: nodes.Node) -> set[str]:
    """'exchange.servers' for every Getattr(Name('exchange'), 'servers') in the tree."""
    from hma_check.contract.sources import NAMESPACES

    found: set[str] = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name in NAMESPACES:
            found.add(f"{node.node.name}.{node.attr}")
    return found


def referenced_item_properties(tree: nodes.Node) -> set[str]:
    """'Server' for every item.Server (or item['Server']) in the tree: the evidence excerpt shows just those."""
    found: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node.node, nodes.Name) and node.node.name == "item":
            if isinstance(node, nodes.Getattr):
                found.add(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                found.add(node.arg.value)
    return found


def unsafe_powershell_outputs(tree: nodes.Template) -> list[str]:
    """Interpolations in an enable/rollback template that are not passed through a PowerShell-safe filter last."""
    problems = []
    for output in tree.find_all(nodes.Output):
        for child in output.nodes:
            if isinstance(child, nodes.TemplateData):
                continue
            if isinstance(child, nodes.Filter) and child.name in PS_SAFE_FILTERS:
                continue
            if isinstance(child, nodes.Const) and isinstance(child.value, (int, float)):
                continue
            problems.append(_describe_node(child))
    return problems


def _describe_node(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_describe_node(node.node)}.{node.attr}"
    if isinstance(node, nodes.Filter):
        return f"... | {node.name}"
    return type(node).__name__


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_identifier(name: str) -> bool:
    return bool(_IDENTIFIER.match(name))
