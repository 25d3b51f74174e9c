"""Shared scenario text and helpers for the Graph collector and lab tests."""

from __future__ import annotations

from hma_check.collect.graph.config import GraphTarget, parse_graph_section
from hma_lab.graph_service import GraphService

CONTOSO = "6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21"
FABRIKAM = "0b3f9a51-7e2c-4d8a-b6f4-2c9e1d7a5b30"
NORTHWIND = "9d2e4f60-1a3b-4c5d-8e7f-a0b1c2d3e4f5"

TENANTS_YAML = f"""
tenants:
  - id: {CONTOSO}
    display_name: Contoso
    initial_domain: contoso.onmicrosoft.com
    domains:
      - {{id: contoso.com, authenticationType: Managed, isVerified: true, isDefault: true}}
      - {{id: contoso.onmicrosoft.com, authenticationType: Managed, isVerified: true}}
      - {{id: fed.contoso.com, authenticationType: Federated, isVerified: true}}
    on_premises_sync_enabled: true
    on_premises_last_sync_date_time: "2026-11-20T06:00:00Z"
    exo_service_principal:
      servicePrincipalNames:
        - https://mail.contoso.com/
        - 00000002-0000-0ff1-ce00-000000000000/mail.contoso.com
        - 00000002-0000-0ff1-ce00-000000000000
      replyUrls: []
      keyCredentials:
        - {{keyId: 1d6e1c55-0b3a-4d9e-9a57-3c0f6b3b7a11, type: AsymmetricX509Cert, usage: Verify,
            displayName: "CN=Exchange hybrid", startDateTime: "2025-01-01T00:00:00Z", endDateTime: "2027-01-01T00:00:00Z"}}
    users:
      - {{userPrincipalName: alice@contoso.com, mail: alice@contoso.com, onPremisesSyncEnabled: true,
          onPremisesSecurityIdentifier: S-1-5-21-1004336348-1177238915-682003330-1105}}
      - {{userPrincipalName: cloudonly@contoso.onmicrosoft.com, onPremisesSyncEnabled: null}}
    generate_users: {{count: 118}}
    security_defaults: false
    conditional_access_policies:
      - id: 7a1c0d2e-0000-4000-8000-000000000001
        displayName: Block legacy authentication
        state: enabledForReportingButNotEnforced
        conditions:
          clientAppTypes: [exchangeActiveSync, other]
          applications: {{includeApplications: [All], excludeApplications: []}}
          users: {{includeUsers: [All], excludeUsers: [], includeGroups: [], excludeGroups: [], includeRoles: [],
                  excludeRoles: []}}
        grantControls: {{operator: OR, builtInControls: [block]}}
    subscribed_skus:
      - skuId: 06ebc4ee-1bb5-47dd-8120-11324bc54e06
        skuPartNumber: SPE_E5
        capabilityStatus: Enabled
        servicePlans: [{{servicePlanName: INTUNE_A, provisioningStatus: Success}}]
  - id: {FABRIKAM}
    display_name: Fabrikam
    initial_domain: fabrikam.onmicrosoft.com
    domains: [{{id: fabrikam.onmicrosoft.com, isDefault: true}}]
    exo_service_principal: {{servicePrincipalNames: [https://mail.fabrikam.com/]}}
    app: {{roles: [Organization.Read.All, Domain.Read.All, Policy.Read.All, User.Read.All]}}
  - id: {NORTHWIND}
    display_name: Northwind
    initial_domain: northwind.onmicrosoft.com
    domains: [{{id: northwind.onmicrosoft.com, isDefault: true}}]
    exo_service_principal: null
"""


def target_for(service: GraphService, tenant_id: str, **overrides: object) -> GraphTarget:
    """A validated graph: config entry pointing at the lab (custom authority, Graph URL and CA bundle)."""
    raw = {"tenant_id": tenant_id, "client_id": service.client_id(tenant_id), "credential": "client_secret",
           "client_secret_env": f"LAB_SECRET_{tenant_id[:8]}", "authority": service.authority,
           "graph_url": service.graph_url, "ca_bundle": str(service.ca_path)}
    raw.update(overrides)
    return parse_graph_section({k: v for k, v in raw.items() if v is not None})[0]


def lab_environ(service: GraphService) -> dict[str, str]:
    return {f"LAB_SECRET_{tid[:8]}": service.secret(tid) for tid in service.tenants}
