"""The one sandboxed Jinja2 environment for check expressions and templates, with its few filters and tests.

Expressions run in ImmutableSandboxedEnvironment with StrictUndefined: a property that is not in the evidence raises
instead of reading as empty, and nothing in a checks file can mutate data or reach Python internals.
Evaluation goes through compile_expression()/compile_template() so the language could be swapped later.
"""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from datetime import date, datetime, timezone
from functools import lru_cache
from types import CodeType
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes, pass_context, pass_environment
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.tests import test_none as _jinja_test_none

from hma_check.evaluate import budget
from hma_check.evaluate.facts import Namespace
from hma_check.evaluate.filters import auth_policies, client_impact, entra, exchange_builds, oauth_endpoints, tls
from hma_check.contract.snapshot import parse_utc

# ------------------------------------------------------------------------------------------- PowerShell quoting

# PowerShell treats the typographic single quotes as quote characters too
# (about_Quoting_Rules), so each must be doubled like ' or it would end the string.
_PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
# Printable ASCII but the quote: nothing to double or splice in, so the text goes between quotes as it is (the
# runbook quotes thousands of names and URLs; the character-by-character path below is for the rest).
_PS_PLAIN = re.compile(r"[\x20-\x26\x28-\x7e]*")


def ps_quote(value: Any) -> str:
    """One PowerShell string literal for any value: '...' with quotes doubled.

    Characters a reviewer cannot see are spliced in as [char]N, so the line a reviewer reads is the line that runs and
    the result is always a single line and a single expression: control characters (a newline could end a comment
    line and start a command), bidirectional and invisible format characters (U+200B-U+200F, U+202A-U+202E,
    U+2066-U+2069, U+FEFF and the rest of Unicode category Cf, which can reorder or hide text) and lone surrogates.
    """
    if value is None:
        return "$null"
    text = value if isinstance(value, str) else str(value)
    if _PS_PLAIN.fullmatch(text):
        return "'" + text + "'"
    return _ps_quote_each(text)


def _ps_quote_each(text: str) -> str:
    """ps_quote, character by character."""
    pieces: list[str] = []
    literal: list[str] = []
    for ch in text:
        if ch in _PS_SINGLE_QUOTES:
            literal.append(ch + ch)
        elif _is_hidden(ch):
            pieces.append("'" + "".join(literal) + "'")
            literal = []
            pieces.append(_ps_char(ch))
        else:
            literal.append(ch)
    pieces.append("'" + "".join(literal) + "'")
    if len(pieces) == 1:
        return pieces[0]
    return "(" + " + ".join(p for p in pieces if p != "''") + ")"


def _is_hidden(ch: str) -> bool:
    """Control (Cc), format (Cf: bidirectional controls, zero-width characters, BOM, tags), line and paragraph
    separators and surrogates: characters that change or hide what a reviewer sees."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")


def _ps_char(ch: str) -> str:
    code = ord(ch)
    # [char] is one UTF-16 code unit: a character beyond the BMP (the Cf tag characters) needs ConvertFromUtf32.
    return f"[char]{code}" if code <= 0xFFFF else f"[char]::ConvertFromUtf32({code})"


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


def before(value: Any, other: Any) -> bool:
    """``a is before(b)``: the first date is strictly earlier than the second (both ISO 8601, compared in UTC)."""
    return to_datetime(value) < to_datetime(other)


def after(value: Any, other: Any) -> bool:
    return to_datetime(value) > to_datetime(other)


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
    """Hosts registered as namespaces: 'https://host/' or 'https://host', any case, and nothing else. An SPN with a
    path, query, port or user ('https://mail.contoso.com/mapi') does not register the host, and the
    '00000002-.../host' form does not count for HMA (Microsoft lists the namespaces as https://host/:
    https://learn.microsoft.com/microsoft-365/enterprise/configure-exchange-server-for-hybrid-modern-authentication)."""
    hosts = set()
    for name in service_principal_names or []:
        text = str(name).strip()
        if not text.lower().startswith("https://"):
            continue
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            continue
        if parts.path not in ("", "/") or parts.query or parts.fragment or port is not None or "@" in parts.netloc:
            continue
        host = (parts.hostname or "").rstrip(".").lower()
        if host:
            hosts.add(host)
    return frozenset(hosts)


def smtp_domain(address: Any) -> str:
    """The lower-case domain of an SMTP address ('User@Contoso.com' -> 'contoso.com'); '' when there is none."""
    text = "" if address is None else str(address).strip()
    return text.rpartition("@")[2].rstrip(".").lower() if "@" in text else ""


def autodiscover_host(domain: Any) -> str:
    """The Autodiscover name Outlook tries for an SMTP domain: 'contoso.com' -> 'autodiscover.contoso.com'."""
    return f"autodiscover.{str(domain).strip().rstrip('.').lower()}"


def accepted_by(domain: Any, accepted_domain_names: Iterable[Any]) -> bool:
    """Whether a domain is one of the accepted domains: equal, or under a wildcard accepted domain (*.contoso.com)."""
    wanted = str(domain or "").lower()
    for name in accepted_domain_names or []:
        pattern = str(name or "").strip().rstrip(".").lower()
        if pattern == wanted or (pattern.startswith("*.") and wanted.endswith(pattern[1:])):
            return True
    return False


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
    """A case-insensitive full regular-expression match, as PowerShell's -match is case-insensitive.

    A pattern that can backtrack exponentially ((a+)+) is refused rather than run: Python's re cannot be stopped.
    """
    return value is not None and _pattern(str(pattern)).fullmatch(str(value)) is not None


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    problem = budget.regex_problem(pattern)
    if problem:
        raise ValueError(problem)
    return re.compile(pattern, re.IGNORECASE)


def require(value: Any, reason: str) -> Any:
    """Return ``value``, or stop the evaluation with ERROR and ``reason`` when it is None or empty.

    For facts a check cannot decide without: ``require(certs, 'the Auth certificate is on no server collected')``.
    """
    from hma_check.evaluate.facts import MissingFact

    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        raise MissingFact("evidence", reason)
    return value


# ------------------------------------------------------------------------------- fast collection filters
# Jinja's select/reject/selectattr/rejectattr/map look the test or filter up and check how to call it for every
# item: over 50,000 users that bookkeeping cost more than the evaluation itself. These resolve it once per call and
# otherwise behave exactly as Jinja's (same attribute lookup rules, same undefined on a missing attribute); anything
# unusual (a dotted attribute, a test that takes the context, map's default=) goes to Jinja's own implementation.

def _plain(function: Callable[..., Any]) -> bool:
    """A test or filter Jinja calls with the value and the arguments only (no context or environment)."""
    from jinja2.utils import _PassArg

    return _PassArg.from_obj(function) is None


def _item_getter(environment: Any, attribute: Any) -> Callable[[Any], Any] | None:
    if not isinstance(attribute, str) or "." in attribute or attribute.isdigit():
        return None

    def get(item: Any) -> Any:
        if type(item) is dict and attribute in item:    # exactly a plain dict: a watched one logs through getitem
            return item[attribute]
        return environment.getitem(item, attribute)
    return get


def _tester(context: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[Any], Any] | None:
    if not args:
        return bool
    test = context.environment.tests.get(args[0])
    if test is None or not _plain(test):
        return None
    rest = args[1:]
    if not rest and not kwargs:
        if test is _jinja_test_none:       # Jinja's test_none is 'value is None': the same, without a Python call per item
            return functools.partial(operator.is_, None)
        return test                 # 'defined', 'string'...: called as it is, without a wrapper per item
    if len(rest) == 1 and not kwargs:
        other = rest[0]
        if args[0] == "in":        # Jinja's test_in is 'value in seq': the same, without a call per item
            return other.__contains__ if hasattr(other, "__contains__") else (lambda value: value in other)
        if test is operator.eq or test is operator.ne:     # 'eq', '==', 'ne'...: symmetric, so called in C
            return functools.partial(test, other)
        return lambda value: test(value, other)
    return lambda value: test(value, *rest, **kwargs)


def _select(keep: bool, by_attribute: bool) -> Callable[..., Any]:
    from jinja2 import filters as jinja_filters

    fallback = {(True, False): jinja_filters.sync_do_select, (False, False): jinja_filters.sync_do_reject,
                (True, True): jinja_filters.sync_do_selectattr,
                (False, True): jinja_filters.sync_do_rejectattr}[(keep, by_attribute)]

    @pass_context
    def select(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        get = _item_getter(context.environment, args[0]) if by_attribute and args else (lambda item: item)
        test = _tester(context, args[1:] if by_attribute else args, kwargs) if get is not None else None
        if get is None or test is None or (by_attribute and not args):
            return fallback(context, value, *args, **kwargs)
        items = _materialized(value)
        values = items
        if by_attribute:
            attribute = args[0]
            try:        # every item a mapping with the attribute: one pass, no lookup rules needed
                values = [item[attribute] for item in items]
            except (KeyError, TypeError, IndexError):
                values = [get(item) for item in items]    # the lookup rules decide, item by item
        name = (args[1] if by_attribute else args[0]) if len(args) > by_attribute else None
        flags = values if test is bool else _tested(test, values, own=name in TESTS)
        # 'not flag' asks the value for its truth exactly as bool() would (an undefined value raises)
        return iter([item for item, flag in zip(items, flags, strict=False) if (not flag) is not keep])
    return select


def _tested(test: Callable[[Any], Any], values: Any, *, own: bool) -> Any:
    """test(value) for every value. One of hma-check's own tests (pure functions of text, such as accepted_by or
    matching) runs once per distinct text when the texts repeat: 50,000 mailboxes have a handful of SMTP domains
    and recipient types. Errors come from the same first value as calling it on each in turn."""
    if own and len(values) > 64 and set(map(type, values)) <= {str}:
        distinct = dict.fromkeys(values)
        if 2 * len(distinct) <= len(values):
            results = {value: test(value) for value in distinct}
            return map(results.__getitem__, values)
    return map(test, values)


def _materialized(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value
    return list(value) if value else ()


@pass_context
def fast_map(context: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
    from jinja2 import filters as jinja_filters

    if not args and set(kwargs) == {"attribute"}:
        get = _item_getter(context.environment, kwargs["attribute"])
        if get is not None:
            items = _materialized(value)
            attribute = kwargs["attribute"]
            try:
                return iter([item[attribute] for item in items])
            except (KeyError, TypeError, IndexError):
                return iter([get(item) for item in items])
    elif args and not kwargs:
        function = context.environment.filters.get(args[0])
        if function is not None and _plain(function):
            rest = args[1:]
            items = _materialized(value)
            if args[0] in ("lower", "upper") and not rest and set(map(type, items)) <= {str}:
                # what do_lower/do_upper do to plain text, in one pass of C
                return iter(list(map(str.lower if args[0] == "lower" else str.upper, items)))
            # the filter itself, metered item by item as its wrapper (budget.metered_filter) would
            return iter(budget.map_filter(args[0], getattr(function, "__wrapped__", function), items, rest,
                                          text_only=args[0] in TEXT_FILTERS))
    return jinja_filters.sync_do_map(context, value, *args, **kwargs)


@pass_environment
def fast_unique(environment: Any, value: Any, case_sensitive: bool = False, attribute: Any = None) -> Any:
    """Jinja's unique: each item whose key (lower-case text unless case_sensitive) was not seen before, in order.
    Plain text is done in passes of C (the SMTP domains of 50,000 mailboxes), anything else by Jinja's own."""
    from jinja2 import filters as jinja_filters

    if attribute is None and not case_sensitive:
        items = _materialized(value)
        if set(map(type, items)) <= {str}:
            distinct = list(dict.fromkeys(items))     # each text once, where it first occurs: the same answer
            keys = list(map(str.lower, distinct))
            first = dict(zip(reversed(keys), reversed(distinct), strict=True))   # each key's first item
            return iter([first[key] for key in dict.fromkeys(keys)])
        value = items
    return jinja_filters.sync_do_unique(environment, value, case_sensitive, attribute)


COLLECTION_FILTERS: dict[str, Callable[..., Any]] = {
    "select": _select(True, False), "reject": _select(False, False),
    "selectattr": _select(True, True), "rejectattr": _select(False, True), "map": fast_map, "unique": fast_unique,
}

def evosts_tenants(auth_servers: Iterable[Any]) -> list[str]:
    """The tenants the organisation is in hybrid with: the Realm of every AzureAD (EvoSts) AuthServer, one per tenant
    (https://learn.microsoft.com/microsoft-365/enterprise/configure-exchange-server-for-hybrid-modern-authentication)."""
    realms = [str(s.get("Realm") or "").lower() for s in auth_servers if s.get("Type") == "AzureAD"]
    return list(dict.fromkeys(r for r in realms if r))


def covering(scoped: Any, tenants: Iterable[Any]) -> Any:
    """A per-tenant source with a part for every tenant in ``tenants``: a tenant the scan did not read is a part that
    is not collected, so every per-tenant check says ERROR for it instead of leaving it out."""
    from hma_check.evaluate.facts import Scoped

    if not isinstance(scoped, Scoped):
        raise TypeError("covering() needs a per-tenant source such as graph.organization")
    return scoped.covering(tenants, "not collected: an EvoSts AuthServer names this tenant, but the scan did not "
                                    "read it (add the tenant to the graph: section of the scan configuration)")


# ----------------------------------------------------------------------------------------- the environment


class CheckEnvironment(ImmutableSandboxedEnvironment):
    """Evidence dicts are read key-first, so a property named like a dict method ('items') still reads as data.

    Every read, call, operator, loop and output is metered against the evaluation budget (hma_check.evaluate.budget):
    the operators through the sandbox's interception, loops, '~' and output by rewriting the parsed template.
    """

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget.tick()
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if type(obj) is Namespace and attribute[:1] != "_":
            # exchange.servers, os.tls_registry: what the sandbox's getattr gives, without its safety checks, which
            # pass for every such name (a Namespace's own attributes all start with '_') and cost a microsecond
            try:
                return obj.__getattr__(attribute)
            except AttributeError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget.tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget.before_binop(operator, left, right)
        return budget.check_value(super().call_binop(context, operator, left, right), f"the result of {operator}")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - as Jinja's
        args, kwargs = budget.before_call(__obj, args, kwargs)
        return budget.check_value(super().call(__context, __obj, *args, **kwargs), "the result of a call")

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None,
                  defer_init: bool = False) -> str:
        return super()._generate(budget.meter_tree(source), name, filename, defer_init=defer_init)


FILTERS: dict[str, Callable[..., Any]] = {
    "ps_quote": ps_quote, "ps_list": ps_list, "ps_bool": ps_bool, "ps_int": ps_int,
    "url_host": url_host, "spn_form": spn_form, "spn_hosts": spn_hosts, "https_url": https_url, "url_key": url_key,
    "smtp_domain": smtp_domain, "autodiscover_host": autodiscover_host,
    "modern_auth_blocked": auth_policies.modern_auth_blocked, "ad_name": auth_policies.ad_name,
    "evosts_metadata_problems": oauth_endpoints.evosts_metadata_problems,
    "partner_metadata_problems": oauth_endpoints.partner_metadata_problems,
    "flatten": flatten, "toset": toset, "lower_all": lower_all, "setting": setting,
    "exchange_build": exchange_build, "exchange_product": exchange_product, "exchange_release": exchange_release,
    "exchange_end_of_support": exchange_end_of_support, "hma_minimum": hma_minimum,
    "supported_cu_floor": supported_cu_floor,
    "tls_state": tls.tls_state, "tls_dotnet_strong": tls.dotnet_strong_crypto, "tls_odd_values": tls.odd_values,
    "tls13_supported": tls.tls13_supported, "days_until": days_until,
    "ca_legacy_block": entra.legacy_block_state, "ca_describe": entra.describe_policy,
    "evosts_tenants": evosts_tenants, "covering": covering, "mailbox_identities": entra.mailbox_identities,
    "synced_identities": entra.synced_identities,
    "hybrid_agent_applications": entra.hybrid_agent_applications,
    "client_users": client_impact.client_users, "client_summary": client_impact.client_summary,
    "server_row": client_impact.server_row, "bearer_share": client_impact.bearer_share,
}
TESTS: dict[str, Callable[..., bool]] = {
    "version_ge": version_ge, "version_lt": version_lt, "before": before, "after": after, "accepted_by": accepted_by,
    "covered_by": lambda host, names: covers(names, host),
    "contains_ci": contains_ci,
    "matching": matching,
    "ca_applies_to_exchange": entra.applies_to_exchange_clients,
}
GLOBALS: dict[str, Callable[..., Any]] = {"require": require}
# Filters that make a short text of any value, with no other effect: a map over 50,000 mailboxes meters them a chunk
# at a time (budget.map_filter).
TEXT_FILTERS = frozenset({"smtp_domain", "autodiscover_host", "url_host", "url_key", "https_url", "spn_form"})
NOT_SET = "not set"


def shown(value: Any) -> Any:
    """How a template prints a value: null (Graph's null, Exchange's $null) reads "not set", never Python's None."""
    return NOT_SET if value is None else value


def make_environment() -> CheckEnvironment:
    # optimized=False: Jinja would otherwise run filters on literals while compiling, outside any budget.
    env = CheckEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, optimized=False,
                         finalize=shown)
    env.filters.update(FILTERS)
    env.filters.update(COLLECTION_FILTERS)
    env.tests.update(TESTS)
    env.filters = {name: budget.metered_filter(name, f) for name, f in env.filters.items()}
    env.filters.update(budget.FILTERS)      # they meter themselves
    env.globals.pop("lipsum", None)   # lorem ipsum of any length: nothing a check needs
    env.globals.update(GLOBALS)
    return env


ENVIRONMENT = make_environment()


_GLOBAL_NAMES = ENVIRONMENT.globals.keys()


class _Frame(Context):
    """Jinja's Context for one evaluation (template.new_context(context, shared=True)), made with only what checks'
    compiled code uses: no set of the template's globals (it serves template modules, which checks cannot import)
    and no blocks unless the template has some. Every expression and template evaluation makes one."""

    def __init__(self, context: dict[str, Any], template: Any, eval_ctx: EvalContext | None = None) -> None:
        # Context's, trimmed
        self.parent = context if context.keys() >= _GLOBAL_NAMES else {**ENVIRONMENT.globals, **context}
        self.vars = {}
        self.environment = ENVIRONMENT
        self.eval_ctx = eval_ctx or EvalContext(ENVIRONMENT, template.name)
        self.exported_vars = set()
        self.name = template.name
        self.globals_keys = set()
        self.blocks = {name: [block] for name, block in template.blocks.items()} if template.blocks else {}


def run_template(template: Any, context: dict[str, Any]) -> str:
    """template.render(context), without copying the context and the globals into a new dict on every call (Jinja
    does, and a scan renders tens of thousands of subjects and 'actual' texts): the context is only read."""
    from jinja2.utils import concat

    return concat(template.root_render_func(_Frame(context, template)))


# An expression's frames share one EvalContext: only a template's statements ({% autoescape %}) change one for
# good; an expression's code sets its 'volatile' to True before anything reads it, every time it runs.
_EXPRESSION_EVAL_CTX = EvalContext(ENVIRONMENT)


def run_expression(expression: Any, context: dict[str, Any]) -> Any:
    """A compile_expression() result called with the context, as run_template renders (undefined is kept)."""
    template = expression._template
    frame = _Frame(context, template, _EXPRESSION_EVAL_CTX)
    for _ in template.root_render_func(frame):     # an expression's template only assigns: it yields nothing
        pass
    return frame.vars["result"]


def compile_expression(source: str) -> Callable[..., Any]:
    """Compile once; call with the context as keyword arguments. Raises jinja2.TemplateSyntaxError."""
    return ENVIRONMENT.compile_expression(source, undefined_to_none=False)


def compile_template(source: str) -> Any:
    return ENVIRONMENT.from_string(source)


def plain_lookup(tree: nodes.Template) -> tuple[str, ...] | None:
    """('item', 'Name') for a template that is exactly '{{ item.Name }}', ('scope',) for '{{ scope }}': most
    subjects are, and reading them directly saves a Jinja render per item."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output) or len(tree.body[0].nodes) != 1:
        return None
    node = tree.body[0].nodes[0]
    if isinstance(node, nodes.Name) and node.ctx == "load":
        return (node.name,)
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.ctx == "load":
        return (node.node.name, node.attr)
    return None


def read_plain(path: tuple[str, ...], context: dict[str, Any]) -> str | None:
    """What rendering the plain template gives, or None to render it the long way (missing, not plain data)."""
    value = context.get(path[0])
    if len(path) == 2:
        if type(value) is not dict or path[1] not in value:
            return None
        value = value[path[1]]
    if not isinstance(value, (str, int, float)):
        return None      # absent, None, a list...: Jinja renders (or refuses) it exactly
    return str(value)


def check_names(tree: nodes.Node) -> None:
    """Raise what compiling would: a filter or test that does not exist (Jinja finds them only then)."""
    from jinja2.exceptions import TemplateAssertionError

    for node in tree.find_all((nodes.Filter, nodes.Test)):
        known = ENVIRONMENT.filters if isinstance(node, nodes.Filter) else ENVIRONMENT.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            raise TemplateAssertionError(f"No {kind} named {node.name!r}.", node.lineno)


def compile_parsed(tree: nodes.Template, source: str, *, expression: bool) -> Any:
    """compile_template or compile_expression from the tree parse() already built (parsing twice cost a fifth of
    loading the catalogue)."""
    return from_code(compile_code(tree, source, expression=expression), expression=expression)


def compile_code(tree: nodes.Template, source: str, *, expression: bool) -> CodeType:
    """The Python code Jinja generates for the tree (an expression: assigned to 'result'). The tree is metered in
    place (budget.meter_tree): compile a tree once. An expression whose tree is not exactly one output goes the long
    way, which raises."""
    if not expression:
        return ENVIRONMENT.compile(tree)
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1 \
            or isinstance(body[0].nodes[0], nodes.TemplateData):
        compile_expression(source)
        raise TemplateSyntaxError("not one expression", 1)
    assign = nodes.Template([nodes.Assign(nodes.Name("result", "store"), body[0].nodes[0], lineno=1)], lineno=1)
    assign.set_environment(ENVIRONMENT)
    return ENVIRONMENT.compile(assign)


def from_code(code: CodeType, *, expression: bool) -> Any:
    """The template (or, for an expression, the callable compile_expression gives) that runs ``code``."""
    template = ENVIRONMENT.template_class.from_code(ENVIRONMENT, code, ENVIRONMENT.make_globals(None), None)
    if not expression:
        return template
    from jinja2.environment import TemplateExpression

    return TemplateExpression(template, False)


@lru_cache(maxsize=None)
def conjuncts(source: str) -> list[tuple[Callable[..., Any], frozenset[str]]]:
    """The parts of an ``a and b and c`` assertion, each compiled on its own with the names it reads.

    A failed assertion is re-evaluated part by part so its excerpt can mark the values that made it false (for
    VDIR-001: the method lists without OAuth, not the external URL that was fine). One part: an empty list.
    """
    from jinja2.environment import TemplateExpression
    from jinja2.parser import Parser

    tree = Parser(ENVIRONMENT, source, state="variable").parse_expression()
    parts: list[nodes.Expr] = []

    def flatten(node: nodes.Expr) -> None:
        if isinstance(node, nodes.And):
            flatten(node.left)
            flatten(node.right)
        else:
            parts.append(node)

    flatten(tree)
    if len(parts) < 2:
        return []
    compiled: list[tuple[Callable[..., Any], frozenset[str]]] = []
    for part in parts:
        part.set_environment(ENVIRONMENT)
        body = [nodes.Assign(nodes.Name("result", "store"), part, lineno=1)]
        template = ENVIRONMENT.from_string(nodes.Template(body, lineno=1))
        compiled.append((TemplateExpression(template, False), referenced_names(part)))
    return compiled


def referenced_names(tree: nodes.Node) -> frozenset[str]:
    """Every variable an expression loads: ``item``, ``scope``, the names of ``let`` bindings, namespaces."""
    return frozenset(node.name for node in tree.find_all(nodes.Name) if node.ctx == "load")


def parse(source: str, *, expression: bool) -> nodes.Template:
    """The AST, for static checks (which sources and names a check uses, PowerShell quoting)."""
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


# Template constructs that can rewrite or emit text after the quoting filters ran, or pull in unchecked text:
# {% filter replace("''", "'") %}{{ v | ps_quote }}{% endfilter %} would undo the quoting.
_PS_FORBIDDEN_BLOCKS = {nodes.FilterBlock: "{% filter %} block", nodes.Macro: "{% macro %}",
                        nodes.CallBlock: "{% call %} block", nodes.Include: "{% include %}",
                        nodes.Import: "{% import %}", nodes.FromImport: "{% from ... import %}",
                        nodes.Extends: "{% extends %}"}


def unsafe_powershell_outputs(tree: nodes.Template) -> list[str]:
    """Interpolations in an enable/rollback template that are not passed through a PowerShell-safe filter last, and
    blocks that could change the quoted text afterwards ({% filter %}, {% set x | filter %}, macros, includes)."""
    problems: list[str] = []
    for kind, what in _PS_FORBIDDEN_BLOCKS.items():
        problems.extend(what for _ in tree.find_all(kind))
    for block in tree.find_all(nodes.AssignBlock):
        if block.filter is not None:
            problems.append("{% set ... | filter %} block")
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


# PowerShell expands $(...) inside double-quoted strings and here-strings, and reads the typographic double quotes
# as double quotes too (about_Quoting_Rules): a quoted value spliced there would run.
_PS_DOUBLE_QUOTES = '"\u201c\u201d\u201e'
_JINJA_TAG = re.compile(r"{{.*?}}|{%.*?%}|{#.*?#}", re.S)


def unsafe_powershell_contexts(source: str) -> list[str]:
    """Interpolations that sit inside a PowerShell double-quoted string or an expandable here-string."""
    problems = []
    if "{{" in source and '@"' in source:
        problems.append('an expandable here-string (@" ... "@)')
    for line in source.splitlines():
        if _JINJA_TAG.sub("", line).lstrip().startswith("#"):
            continue    # a comment line: nothing in it expands
        for match in re.finditer(r"{{", line):
            before = _JINJA_TAG.sub("", line[:match.start()])
            if sum(before.count(q) for q in _PS_DOUBLE_QUOTES) % 2:
                problems.append(f"a value inside a double-quoted string ({line.strip()[:60]})")
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
