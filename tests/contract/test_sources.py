"""The property lists are declared once (sources.PROPERTIES); the contract's shapes (so docs/sources.md), the Graph
requests and the offline collection script must say the same, property for property."""

from __future__ import annotations

import re

import pytest

from hma_check.collect.offline.script import collector_script
from hma_check.contract.sources import BY_NAME, PROPERTIES, SOURCES

SCRIPT = collector_script(graph=True)


def _blocks() -> dict[str, str]:
    """The collection script's code for each source: from its Save-Hma* -Source 'name' to the next Save-Hma*."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"Save-Hma\w+ -Source '([\w.]+)'", SCRIPT)]
    ends = [start for start, _ in starts[1:]] + [len(SCRIPT)]
    return {name: SCRIPT[start:end] for (start, name), end in zip(starts, ends, strict=True)}


def _ordered_keys(block: str) -> list[str]:
    """The keys of the first [ordered]@{...} in ``block``, at its own level (nested tables skipped)."""
    body = block[block.index("[ordered]@{") + len("[ordered]@{"):]
    keys, depth = [], 0
    for match in re.finditer(r"[{}]|(?:^|[;\n])\s*(\w+)\s*=", body):
        if match.group(0) == "{":
            depth += 1
        elif match.group(0) == "}":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0:
            keys.append(match.group(1))
    return keys


def test_every_listed_property_is_in_the_contracts_shape():
    assert set(PROPERTIES) <= set(BY_NAME)
    for name, properties in PROPERTIES.items():
        assert len(set(properties)) == len(properties), name
        for prop in properties:
            assert re.search(rf"(?<!\w){re.escape(prop)}(?!\w)", BY_NAME[name].shape), f"{name}.{prop} is not in its shape"


def test_every_exchange_and_os_source_has_its_properties_declared():
    shaped = {s.name for s in SOURCES if s.collector in ("exchange", "os")} - {"exchange.exchange_certificates"}
    assert shaped == {name for name in PROPERTIES if name.startswith(("exchange.", "os."))}


@pytest.mark.parametrize("name", [name for name in PROPERTIES if name.startswith("graph.")])
def test_graph_selects_and_the_script_read_exactly_the_declared_properties(name):
    selected = re.search(r"\$select=([\w,]+)", BY_NAME[name].filled_by)
    assert selected and tuple(selected.group(1).split(",")) == PROPERTIES[name]
    block = _blocks()[name]
    for listed in re.findall(r"-Property '([\w,]+)'", block):
        assert tuple(listed.split(",")) == PROPERTIES[name]
    assert tuple(_ordered_keys(block)) == PROPERTIES[name]


def test_the_scripts_select_lists_are_the_declared_properties():
    found = {}
    for name, block in _blocks().items():
        for listed in re.findall(r"Select-Object -Property @\(([^)]*)\)", block):
            found[name] = tuple(re.findall(r"'(\w+)'", listed))
    assert {"exchange.mailboxes", "exchange.cas_mailboxes_mapi_disabled", "exchange.admin_users"} <= set(found)
    for name, properties in found.items():
        assert properties == PROPERTIES[name], name
