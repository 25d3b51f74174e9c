"""Benchmark: outside-in probes against the lab's HTTPS endpoints, concurrency 8 against concurrency 1 in the same run.

Two cases. Healthy: 24 hosts on 2 nodes (48 nodes, 12 requests and handshakes each); reports probes per second.
Silent: 16 hosts that accept TCP and never answer, timeout 0.5 s; each costs one timeout, so concurrency must hide
them. Goal: with concurrency 8 the silent case takes at most 30 % of its sequential time (ideal 12.5 %), and no
probe result is lost in either case.

    python benchmarks/probes.py
"""

from __future__ import annotations

import json
import sys
import time

from hma_check.collect.probes.config import parse_probe_settings
from hma_check.collect.probes.collector import collect_probes
from hma_lab.endpoints import EndpointsSpec, HostSpec, NodeSpec
from hma_check.contract.snapshot import Snapshot

GOAL_SILENT_RATIO = 0.30
TIMEOUT = 0.5


def spec(healthy: int, silent: int) -> EndpointsSpec:
    nodes = (NodeSpec("EX01", "127.0.1.1"), NodeSpec("EX02", "127.0.1.2"))
    hosts = tuple(HostSpec(f"host{i:02}.contoso.com", ("EX01", "EX02")) for i in range(healthy)) + tuple(
        HostSpec(f"silent{i:02}.contoso.com", ("EX01",), front="silent") for i in range(silent))
    return EndpointsSpec(tenant_ids=("6f1c2a9e-3b7d-4c11-9a2e-5d8f0b4c7e21",), evosts_default=True,
                         oauth2_client_profile_enabled=True, nodes=nodes, hosts=hosts)


def run(server, concurrency: int) -> tuple[float, int]:
    settings = parse_probe_settings({"hosts": [host.name for host in server.spec.hosts],
                                     "connect_to": server.connect_to, "ca_bundle": str(server.ca_bundle),
                                     "timeout": TIMEOUT, "concurrency": concurrency})
    started = time.perf_counter()
    results = collect_probes(Snapshot.new(), settings)
    return time.perf_counter() - started, len(results)


def main() -> int:
    from hma_lab.endpoint_server import EndpointServer

    report: dict[str, object] = {"benchmark": "probes", "timeout_s": TIMEOUT}
    with EndpointServer(spec(24, 0)) as server:
        expected = 1 + 48 * (5 + 2 + 1)  # probe.targets, then per node: 5 Bearer, 2 Autodiscover v2, 1 TLS
        sequential, n1 = run(server, 1)
        concurrent, n8 = run(server, 8)
        report.update(healthy_nodes=48, healthy_sequential_s=round(sequential, 2),
                      healthy_concurrency8_s=round(concurrent, 2),
                      healthy_results_per_s=round(n8 / concurrent, 1), healthy_complete=n1 == n8 == expected)
    with EndpointServer(spec(0, 16)) as server:
        expected = 1 + 16 * 8
        sequential, n1 = run(server, 1)
        concurrent, n8 = run(server, 8)
        report.update(silent_hosts=16, silent_sequential_s=round(sequential, 2),
                      silent_concurrency8_s=round(concurrent, 2),
                      silent_ratio=round(concurrent / sequential, 3), silent_complete=n1 == n8 == expected)
    report["goal_silent_ratio"] = GOAL_SILENT_RATIO
    report["pass"] = bool(report["healthy_complete"] and report["silent_complete"]
                          and report["silent_ratio"] <= GOAL_SILENT_RATIO)
    print(json.dumps(report, indent=1))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
