"""Build hma_check/samples/contoso-evidence.json: the baseline with the problems a real readiness run finds.

Run `python -m tests.support.make_sample` after changing the baseline; tests/render/test_render.py fails while the
two differ.
"""

from __future__ import annotations


from hma_check.contract.snapshot import Snapshot
from tests.support import baseline
from tests.support.baseline import apply_ops
from tests.support.common import SAMPLE

PROBLEMS = [
    # one server out of ten: OAuth missing on EX02's /mapi
    {"set": ["exchange.mapi_virtual_directories@EX02", 0, "IISAuthenticationMethods"], "to": ["Ntlm", "Negotiate"]},
    {"set": ["exchange.mapi_virtual_directories@EX02", 0, "InternalAuthenticationMethods"], "to": ["Ntlm", "Negotiate"]},
    # the internal namespace was never registered in Entra ID
    {"set": ["exchange.mapi_virtual_directories@EX01", 0, "InternalUrl"], "to": "https://mail.corp.contoso.com/mapi"},
    {"set": ["exchange.mapi_virtual_directories@EX02", 0, "InternalUrl"], "to": "https://mail.corp.contoso.com/mapi"},
    # TLS 1.0 still enabled on EX01 (a warning)
    {"set": ["os.tls_registry@EX01", "Protocols", "TLS 1.0"], "to": {"Server": {"Enabled": 1, "DisabledByDefault": 0},
                                                                    "Client": {"Enabled": 1, "DisabledByDefault": 0}}},
    # nobody has looked at the report-only legacy block
    {"set": ["graph.conditional_access_policies@TENANT", 0, "state"], "to": "enabledForReportingButNotEnforced"},
    # the plan: legacy authentication blocking comes after go-live
    {"set": ["exchange.organization_config", "DefaultAuthenticationPolicy"], "to": None},
    # WinRM to EX02 was refused, so its OS facts are missing
    {"fail": "os.tls_registry@EX02"},
    # a plain scan: the optional OWA/ECP area was not asked for
    {"set": ["scan.options", "owa_ecp"], "to": False},
]


def build_sample() -> Snapshot:
    snapshot = apply_ops(baseline.build(), PROBLEMS)
    failed = snapshot.sources["os.tls_registry@EX02"]
    failed.error = "WinRMTransportError: connection to ex02.contoso.com:5986 refused"
    snapshot.target["mode"] = "sample (synthetic data)"
    return snapshot


if __name__ == "__main__":
    SAMPLE.write_bytes(build_sample().dumps())
    print(f"wrote {SAMPLE}")
