"""Expression helpers: PowerShell quoting, dates, URL hosts, SPNs, builds, and TLS with HealthChecker's semantics."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from hma_check.evaluate.filters import entra, exchange_builds, tls
from hma_check.evaluate import expr
from hma_check.collect import clixml

from tests.support.offline_fixtures import REALDATA

TLS_CAPTURES = REALDATA / "Diagnostics/HealthChecker/Tests/DataCollection/E19/OS"


def _parse_powershell(source: str):
    import tree_sitter_powershell
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_powershell.language())).parse(source.encode())


@given(st.text(max_size=60))
@settings(max_examples=150, deadline=None)
def test_ps_quote_is_always_one_expression_on_one_line(value):
    quoted = expr.ps_quote(value)
    assert "\n" not in quoted and "\r" not in quoted
    tree = _parse_powershell(f"Set-Thing -Identity {quoted}\n")
    assert not tree.root_node.has_error, quoted
    command = tree.root_node.children[0]
    # exactly one command: no value can start a second statement
    assert len(tree.root_node.children) == 1 and command.type == "statement_list"
    assert len([c for c in command.children if c.type == "pipeline"]) == 1


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
@settings(max_examples=300, deadline=None)
def test_ps_quote_plain_ascii_shortcut_quotes_as_each_character_does(value):
    assert expr.ps_quote(value) == expr._ps_quote_each(value)


@pytest.mark.parametrize("value,expected", [
    ("x'; Remove-Item C:\\ -Recurse; '", "'x''; Remove-Item C:\\ -Recurse; '''"),
    ("EX1\u2019s", "'EX1\u2019\u2019s'"),          # a typographic quote also ends a PowerShell string
    ("a\nb", "('a' + [char]10 + 'b')"),
    (None, "$null"),
])
def test_ps_quote_examples(value, expected):
    assert expr.ps_quote(value) == expected


def test_ps_list_bool_int():
    assert expr.ps_list(["Ntlm", "OAuth"]) == "@('Ntlm','OAuth')"
    assert expr.ps_list([]) == "@()"
    assert expr.ps_bool(True) == "$true"
    with pytest.raises(TypeError):
        expr.ps_bool(None)     # no default: an unknown value cannot become $false


def test_days_until_uses_the_evaluation_time():
    run = expr.compile_expression("'2026-12-20T09:00:00Z' | days_until")
    assert run(now=datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)) == 30
    assert run(now=datetime(2027, 1, 20, 9, 0, tzinfo=timezone.utc)) == -31


@pytest.mark.parametrize("url,host", [
    ("https://Mail.Contoso.com/mapi", "mail.contoso.com"),
    ("https://mail.contoso.com:443/EWS/Exchange.asmx", "mail.contoso.com"),
    ("autodiscover.contoso.com", "autodiscover.contoso.com"),
    (None, ""),
])
def test_url_host(url, host):
    assert expr.url_host(url) == host


def test_only_https_spns_count_for_hma():
    names = ["https://mail.contoso.com/", "00000002-0000-0ff1-ce00-000000000000/autodiscover.contoso.com",
             "https://AutoDiscover.contoso.com"]
    assert expr.spn_hosts(names) == {"mail.contoso.com", "autodiscover.contoso.com"}
    assert expr.spn_form("Mail.Contoso.com") == "https://mail.contoso.com/"


def test_only_https_host_with_nothing_after_it_registers_a_namespace():
    names = ["https://mail.contoso.com/mapi", "https://owa.contoso.com/owa/", "https://ews.contoso.com:443/",
             "https://user@imap.contoso.com/", "https://q.contoso.com/?x=1", "HTTPS://EAS.Contoso.com/",
             "https://oab.contoso.com"]
    assert expr.spn_hosts(names) == {"eas.contoso.com", "oab.contoso.com"}


def test_smtp_domains_and_accepted_domains():
    assert expr.smtp_domain("Ada@Fabrikam.COM") == "fabrikam.com" and expr.smtp_domain(None) == ""
    assert expr.accepted_by("fabrikam.com", ["contoso.com", "Fabrikam.com"])
    assert expr.accepted_by("eu.contoso.com", ["*.contoso.com"]) and not expr.accepted_by("contoso.com", ["*.contoso.com"])
    assert not expr.accepted_by("tailspin.com", ["contoso.com"])


def test_certificate_name_coverage():
    assert expr.covers(["*.contoso.com"], "mail.contoso.com")
    assert not expr.covers(["*.contoso.com"], "a.b.contoso.com")
    assert not expr.covers(["mail.contoso.com"], "autodiscover.contoso.com")


@pytest.mark.parametrize("text,name", [
    ("Version 15.2 (Build 986.5)", "Exchange 2019 CU11"),
    ("15.02.0986.005", "Exchange 2019 CU11"),
    ("Version 15.2 (Build 1544.11)", "Exchange 2019 CU14 Apr24HU"),
    ("Version 15.2 (Build 2562.17)", "Exchange SE RTM"),
    ("Version 15.1 (Build 1261.35)", "Exchange 2016 CU7"),
    ("Version 15.2 (Build 221.12)", "Exchange 2019 RTM"),
    ("Version 14.3 (Build 123.4)", "Exchange 2010"),
])
def test_build_names(text, name):
    assert exchange_builds.describe(expr.exchange_build(text)).name == name


def test_hma_minimum_builds_are_the_documented_ones():
    assert exchange_builds.HMA_MINIMUM == {"Exchange 2013": "15.0.1365.1", "Exchange 2016": "15.1.1415.2",
                                           "Exchange 2019": "15.2.330.5", "Exchange SE": "15.2.2562.17"}
    assert expr.version_ge("15.1.1415.2", "15.1.1415.2") and expr.version_lt("15.1.1261.35", "15.1.1415.2")


# ------------------------------------------------------------------------------------------------ TLS semantics

def _registry_from_healthchecker(file_name: str) -> dict:
    """HealthChecker's derived TLS object, read back to the raw values (its booleans were hand-edited upstream)."""
    path = TLS_CAPTURES / file_name
    [obj] = clixml.parse_clixml(path.read_bytes(), source=str(path))
    protocols = {}
    for version, entry in obj.properties["Registry"]["TLS"].items():
        protocols[f"TLS {version}"] = {
            side: {"Enabled": entry.get(f"{side}EnabledValue"), "DisabledByDefault": entry.get(f"{side}DisabledByDefaultValue")}
            for side in ("Server", "Client")}
    return {"Protocols": protocols}


def test_tls_states_from_the_real_e19_capture():
    registry = _registry_from_healthchecker("GetAllTlsSettings.xml")
    assert tls.tls_state(registry, "TLS 1.0") == "Disabled"
    assert tls.tls_state(registry, "TLS 1.1") == "Disabled"
    assert tls.tls_state(registry, "TLS 1.2") == "Enabled"
    assert tls.tls_state(registry, "TLS 1.3") == "Disabled"      # absent: disabled for 1.3 only


def test_0xffffffff_on_one_side_is_misconfigured_and_reported():
    """GetAllTlsSettings1.xml: TLS 1.0 Client Enabled = -1 (0xffffffff), server 0: HealthChecker says Misconfigured."""
    registry = _registry_from_healthchecker("GetAllTlsSettings1.xml")
    assert tls.tls_state(registry, "TLS 1.0") == "Misconfigured"
    assert tls.tls_state(registry, "TLS 1.2") == "Enabled"
    assert "TLS 1.0\\Client\\Enabled = 0xffffffff" in tls.odd_values(registry)


def test_tls13_client_and_server_disagreeing_is_misconfigured():
    registry = _registry_from_healthchecker("GetAllTlsSettings2.xml")
    assert tls.tls_state(registry, "TLS 1.3") == "Misconfigured"


def test_absent_values_follow_healthchecker():
    registry = {"Protocols": {}}
    assert tls.tls_state(registry, "TLS 1.2") == "Enabled"
    assert tls.tls_state(registry, "TLS 1.3") == "Disabled"
    half = {"Protocols": {"TLS 1.2": {"Server": {"Enabled": 1, "DisabledByDefault": 1},
                                      "Client": {"Enabled": 1, "DisabledByDefault": 1}}}}
    assert tls.tls_state(half, "TLS 1.2") == "Half Disabled"


def test_dotnet_strong_crypto_needs_both_views():
    good = {"v4.0.30319": {"SystemDefaultTlsVersions": 1, "SchUseStrongCrypto": 1}}
    assert tls.dotnet_strong_crypto({"NETFramework": good, "NETFrameworkWow6432Node": good})
    assert not tls.dotnet_strong_crypto({"NETFramework": good, "NETFrameworkWow6432Node": {}})


def test_tls13_support_needs_cu15_and_windows_2022():
    assert tls.tls13_supported("15.2.1748.10", "20348")
    assert not tls.tls13_supported("15.2.1544.4", "20348")
    assert not tls.tls13_supported("15.2.2562.17", "17763")


# ------------------------------------------------------------------------------------------ Conditional Access

LEGACY_BLOCK = {"state": "enabled", "displayName": "Block legacy",
                "conditions": {"clientAppTypes": ["exchangeActiveSync", "other"],
                               "applications": {"includeApplications": ["All"]}, "users": {"includeUsers": ["All"]}},
                "grantControls": {"builtInControls": ["block"]}}


def test_legacy_block_report_only_is_not_enforced():
    assert entra.legacy_block_state(LEGACY_BLOCK) == "enforced"
    assert entra.legacy_block_state(dict(LEGACY_BLOCK, state="enabledForReportingButNotEnforced")) == "report-only"
    assert entra.legacy_block_state(dict(LEGACY_BLOCK, state="disabled")) is None
    partial = {**LEGACY_BLOCK, "conditions": {**LEGACY_BLOCK["conditions"], "clientAppTypes": ["other"]}}
    assert entra.legacy_block_state(partial) is None


def test_policies_that_will_apply_to_on_premises_mailboxes():
    mfa = {"state": "enabled", "displayName": "MFA", "grantControls": {"builtInControls": ["mfa"]},
           "conditions": {"clientAppTypes": ["all"], "applications": {"includeApplications": ["Office365"]},
                          "users": {"includeUsers": ["All"]}}}
    assert entra.applies_to_exchange_clients(mfa)
    assert not entra.applies_to_exchange_clients(LEGACY_BLOCK)       # legacy clients only
    excluded = {**mfa, "conditions": {**mfa["conditions"], "applications": {
        "includeApplications": ["All"], "excludeApplications": ["00000002-0000-0ff1-ce00-000000000000"]}}}
    assert not entra.applies_to_exchange_clients(excluded)


@pytest.mark.parametrize("source", [
    "users | selectattr('sync') | map(attribute='upn') | list",
    "users | rejectattr('sync') | map(attribute='upn') | map('lower') | list",
    "users | selectattr('upn', 'in', ['A@x', 'c@x']) | map(attribute='upn') | map('upper') | list",
    "users | selectattr('n', 'gt', 1) | map(attribute='n') | list",
    "users | map(attribute='upn') | reject('none') | map('lower') | list",
    "[1, none, 'a', ''] | select | list",
    "[1, none, 'a', ''] | reject('none') | list",
    "users | selectattr('sync', 'eq', true) | map(attribute='n') | sum",
    "users | map(attribute='upn') | reject('none') | unique | list",
    "(users | map(attribute='upn') | list) + ['a@X', 'B@x'] | reject('none') | unique | list",
    "users | map(attribute='upn') | reject('none') | unique(case_sensitive=true) | list",
    "users | map(attribute='n') | unique | list",
    "users | unique(attribute='sync') | map(attribute='n') | list",
    "[] | unique | list",
    "users | map(attribute='upn') | reject('eq', 'A@x') | list",
    "users | map(attribute='upn') | select('==', none) | list",
    "users | map(attribute='n') | select('ne', 1) | list",
    "users | rejectattr('sync', 'none') | map(attribute='n') | list",
    "users | map(attribute='upn') | select('none') | list",
])
def test_the_fast_collection_filters_give_what_jinja_gives(source):
    """The same results as Jinja's own select/reject/selectattr/rejectattr/map (the sandbox's, over plain data)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from hma_check.evaluate.expr import compile_expression

    users = [{"upn": "A@x", "sync": True, "n": 1}, {"upn": "b@x", "sync": False, "n": 2},
             {"upn": None, "sync": True, "n": 3}, {"upn": "c@x", "sync": None, "n": 0}]
    reference = ImmutableSandboxedEnvironment(undefined=StrictUndefined).compile_expression(
        source, undefined_to_none=False)
    assert compile_expression(source)(users=users) == reference(users=users)


def test_unique_lower_and_upper_on_any_text_give_what_jinja_gives():
    """The fast unique, lower and upper over generated lists (case variants, non-ASCII text whose lower case
    differs in length, mixed types) give Jinja's own results, in Jinja's order."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from hma_check.evaluate.expr import compile_expression
    from tests.support.fuzz import FUZZ, examples

    reference = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    text = st.sampled_from(["a", "A", "b", "ß", "SS", "İ", "i̇", "Σ", "σ", "ς", ""]) | st.text(max_size=3)
    values = st.lists(text, max_size=12) | st.lists(text | st.integers(0, 3) | st.none(), max_size=8)
    sources = ["values | unique | list", "values | map('lower') | list", "values | map('upper') | unique | list",
               "values | unique(case_sensitive=true) | list"]

    @settings(FUZZ, max_examples=examples(200))
    @given(values=values, source=st.sampled_from(sources))
    def one(values, source):
        try:
            expected = reference.compile_expression(source, undefined_to_none=False)(values=values)
        except Exception as exc:  # noqa: BLE001 - lower of a number: both must refuse
            with pytest.raises(type(exc)):
                compile_expression(source)(values=values)
            return
        assert compile_expression(source)(values=values) == expected

    one()


def test_own_tests_over_repeated_text_give_what_calling_them_on_each_gives():
    """select/reject/selectattr with hma-check's own tests run once per distinct text when texts repeat: the same
    items, in the same order, as Jinja calling the test on every one (and the same error for a bad pattern)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from hma_check.evaluate.expr import TESTS, compile_expression
    from tests.support.fuzz import FUZZ, examples

    reference = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    reference.tests.update(TESTS)
    domain = st.sampled_from(["contoso.com", "CONTOSO.com", "fabrikam.com", "x.contoso.com", "", "a.b"])
    sources = ["values | select('accepted_by', ['contoso.com', '*.contoso.com']) | list",
               "values | reject('accepted_by', ['fabrikam.com']) | list",
               "values | select('matching', 'contoso.*') | list",
               "rows | selectattr('d', 'accepted_by', ['contoso.com']) | map(attribute='n') | list",
               "rows | rejectattr('d', 'matching', '(x|a)[.].*') | map(attribute='n') | list"]

    sizes = st.integers(0, 300)      # drawn evenly: most lists long enough to take the once-per-text path

    @settings(FUZZ, max_examples=examples(60))
    @given(values=sizes.flatmap(lambda n: st.lists(domain, min_size=n, max_size=n)), source=st.sampled_from(sources))
    def one(values, source):
        rows = [{"d": value, "n": n} for n, value in enumerate(values)]
        expected = reference.compile_expression(source, undefined_to_none=False)(values=values, rows=rows)
        assert compile_expression(source)(values=values, rows=rows) == expected

    one()
    with pytest.raises(ValueError, match="exponential"):
        compile_expression("values | select('matching', '(a+)+b') | list")(values=["aaa"] * 100)


def test_a_missing_attribute_is_an_error_in_the_fast_filters_too():
    from jinja2.exceptions import UndefinedError

    from hma_check.evaluate.expr import compile_expression

    with pytest.raises(UndefinedError):
        compile_expression("users | selectattr('sync') | list")(users=[{"sync": True}, {"other": 1}])


@pytest.mark.parametrize("source,context", [
    ("{{ item.Name }}", {"item": {"Name": "EX01"}}), ("{{ item.Name }}", {"item": {"Name": 7}}),
    ("{{ item.Name }}", {"item": {"Name": None}}), ("{{ scope }}", {"scope": "tenant-1"}),
    ("{{ item.Name }}", {"item": {"Name": ["a"]}}), ("{{ item.Name }}", {"item": {"Name": True}}),
])
def test_a_plain_template_read_directly_gives_what_rendering_gives(source, context):
    from hma_check.evaluate.expr import compile_template, parse, plain_lookup, read_plain

    path = plain_lookup(parse(source, expression=False))
    assert path is not None
    direct = read_plain(path, context)
    assert direct is None or direct == compile_template(source).render(context)


def test_a_plain_template_with_a_missing_property_is_left_to_jinja():
    from hma_check.evaluate.expr import read_plain

    assert read_plain(("item", "Name"), {"item": {"Other": 1}}) is None
    assert read_plain(("scope",), {}) is None


def test_the_trimmed_context_has_every_attribute_jinjas_has():
    """expr._Frame builds Jinja's Context by hand (cheaper per evaluation): a Jinja release that gives Context another
    attribute must fail here, not in a check at run time."""
    from jinja2.runtime import Context

    template = expr.compile_expression("item")._template
    context = {"item": 1, **expr.ENVIRONMENT.globals}
    jinjas = Context(expr.ENVIRONMENT, context, template.name, template.blocks)
    ours = expr._Frame(context, template)
    assert vars(ours).keys() == vars(jinjas).keys()
    assert {name: value for name, value in vars(ours).items() if name != "eval_ctx"} == \
        {name: value for name, value in vars(jinjas).items() if name != "eval_ctx"}
    assert vars(ours.eval_ctx) == vars(jinjas.eval_ctx)
