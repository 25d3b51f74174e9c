"""Which sources a finding read, with the exact command that filled each; big per-server groups fold into one line."""

from __future__ import annotations

from hma_check.contract import sources as source_registry
from hma_check.evaluate.facts import Facts


class Cited:
    """Sources every finding of a check cites (what for_each read), with their provenance lines built once."""

    def __init__(self, facts: Facts, keys: list[str]) -> None:
        self.lines = provenance(facts, keys)
        self.whole = {line["key"].split(" (", 1)[0] for line in self.lines if line["key"].endswith(" scopes)")}
        # the keys these lines cite: those given, and every collected scope of a source folded into one line
        self.covered = set(keys) | {result.key for name in self.whole for result in facts.results(name)}
        self.more: dict[tuple[str, ...], list[dict[str, str]]] = {}

    def add(self, facts: Facts, keys: list[str]) -> list[dict[str, str]]:
        """These lines, then those of the sources only this finding read. The lines for the same sources are built
        once per check: every finding of HMA-AUTH-011 reads the certificates of all 200 servers."""
        if self.covered.issuperset(keys):
            return list(self.lines)
        more = tuple(k for k in keys if k not in self.covered and k.split("@", 1)[0] not in self.whole)
        if not more:
            return list(self.lines)
        lines = self.more.get(more)
        if lines is None:
            lines = self.more[more] = self.lines + provenance(facts, list(more))
        return list(lines)


def provenance(facts: Facts, keys: list[str]) -> list[dict[str, str]]:
    """The sources a finding read, with the exact command; big per-server groups are folded into one line."""
    by_name: dict[str, dict[str, None]] = {}      # name -> its keys read, in order (a dict: no repeats, fast)
    for key in keys:
        name = key.split("@", 1)[0]
        group = by_name.setdefault(name, {})
        if key == name and facts.is_scoped(name):   # a whole scoped source: cite each of its scopes
            group.update(dict.fromkeys([r.key for r in facts.results(name)] or [name]))
        else:
            group.setdefault(key, None)
    out = []
    for name, group in by_name.items():
        if len(group) > 3:
            ok = facts.ok_keys(name)
            failed = sum(1 for key in group if key not in ok)
            spec = source_registry.BY_NAME.get(name)
            out.append({"key": f"{name} ({len(group)} scopes)", "command": spec.filled_by if spec else "",
                        "status": "ok" if not failed else f"{failed} not ok"})
            continue
        for key in group:
            result = facts.result(key)
            if result is None:
                spec = source_registry.BY_NAME.get(name)
                out.append({"key": key, "command": spec.filled_by if spec else "", "status": "not collected"})
            else:
                out.append({"key": key, "command": result.command, "status": result.status})
    return out
