"""The UserAgent table: each rule on the UserAgents it is for, what it says about modern authentication, its sources."""

from __future__ import annotations

import pytest

from hma_check.collect.logs import user_agents
from hma_check.collect.logs.user_agents import RULES, classify

from tests.support.common import TESTS

ROOT = TESTS.parent


@pytest.mark.parametrize("agent,family,version,modern", [
    # Outlook for Windows by major version (Microsoft Office/<major>.0 ... Microsoft Outlook <build>)
    ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)", "Outlook for Windows",
     "16.0.17928", "yes"),
    ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.4266; Pro)", "Outlook for Windows",
     "16.0.4266", "yes"),
    ("Microsoft Office/15.0 (Windows NT 6.1; Microsoft Outlook 15.0.5589; Pro)", "Outlook for Windows",
     "15.0.5589", "registry"),
    ("Microsoft Office/14.0 (Windows NT 6.1; Microsoft Outlook 14.0.7268; Pro)", "Outlook for Windows",
     "14.0.7268", "no"),
    ("Microsoft Office/12.0 (Windows NT 5.1; Microsoft Office Outlook 12.0.6770; Pro)", "Outlook for Windows",
     "12.0.6770", "no"),
    ("MSRPC", "Outlook for Windows (RPC over HTTP)", "", "no"),
    ("Microsoft BITS/7.8", "Outlook for Windows (offline address book download)", "7.8", "unknown"),
    ("MacOutlook/16.89.24091630 (Intelx64 Mac OS X 14.6.1 (Build 23G93))", "Outlook for Mac", "16.89.24091630", "yes"),
    ("MacOutlook/14.7.7.170905 (Intel Mac OS X 10.12.6)", "Outlook for Mac", "14.7.7.170905", "no"),
    ("Outlook-iOS-Android/1.0", "Outlook for iOS and Android", "1.0", "profile"),
    ("Outlook-iOS/2.0", "Outlook for iOS and Android", "2.0", "profile"),
    # Mail for iOS over ActiveSync: 1505.302 is iOS 11.3.1 (15E302), the first that can.
    ("Apple-iPhone10C1/1505.302", "Mail for iOS (ActiveSync)", "iOS 11 (build 15E302)", "profile"),
    ("Apple-iPhone9C3/1504.80", "Mail for iOS (ActiveSync)", "iOS 11 (build 15D80)", "no"),
    ("Apple-iPad13C1/2005.47", "Mail for iOS (ActiveSync)", "iOS 16 (build 20E47)", "profile"),
    ("AppleExchangeWebServices/818.120.2 accountsd/113", "Apple Mail and accounts (EWS)", "818.120.2", "unknown"),
    ("Mac OS X/10.15.7 (19H2); ExchangeWebServices/8.0 (308); Mail/13.4 (3608.120.23.2.4)",
     "Apple Mail and accounts (EWS)", "8.0", "unknown"),
    ("Android-SAMSUNG-SM-G991B/101.1003", "Other ActiveSync client", "Android-SAMSUNG-SM-G991B/101.1003", "unknown"),
    ("ExchangeServicesClient/15.00.0913.015", "EWS Managed API application", "15.00.0913.015", "unknown"),
    ("python-requests/2.32.3", "Script or custom application", "python-requests/2.32.3", "unknown"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML  like Gecko) Chrome/62.0.3202.62 "
     "Safari/537.36", "Web browser", "Chrome 62", "yes"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 "
     "Safari/537.36 Edg/129.0.0.0", "Web browser", "Edge 129", "yes"),
    ("AMProbe/Local/ClientAccess", "Exchange monitoring", "", "n/a"),
    ("MapiHttpClient", "Exchange monitoring", "", "n/a"),
    ("", "No UserAgent", "", "unknown"),
    ("SomethingNew/1.0", "Other", "", "unknown"),
])
def test_classify(agent, family, version, modern):
    client = classify(agent)
    assert (client.family, client.version, client.modern) == (family, version, modern)
    assert client.note


def test_every_rule_cites_a_source_and_its_example_matches_it():
    for rule in RULES:
        assert rule.references and all(r.startswith("https://") for r in rule.references), rule.family
        assert classify(rule.example).family == rule.family, rule.example
        assert classify(rule.example).modern in user_agents.MODERN_VALUES


def test_the_docs_table_is_generated_from_the_rules():
    text = (ROOT / "docs" / "clients.md").read_text(encoding="utf-8")
    assert user_agents.markdown() in text, "run: python -m hma_check.collect.logs.user_agents (docs/clients.md)"


@pytest.mark.parametrize("name,service", [
    ("CONTOSO\\svc-crm", True), ("CONTOSO\\svc_backup", True), ("scanner01@contoso.com", True),
    ("CONTOSO\\noreply", True), ("CONTOSO\\sap-interface", True), ("CONTOSO\\alice", False),
    ("CONTOSO\\sally", False), ("CONTOSO\\appleton", False), ("CONTOSO\\sarah.service", True),
])
def test_service_account_names(name, service):
    assert user_agents.looks_like_service_account(name) is service


def test_health_mailboxes_are_exchange_internal():
    assert user_agents.is_exchange_internal("DOMAIN\\HealthMailboxb4dbf9b")
    assert user_agents.is_exchange_internal("HealthMailbox0123abcd@contoso.com")
    assert not user_agents.is_exchange_internal("CONTOSO\\healthmailboxfan.alice")
