"""What changed in the collected facts between two evidence files: a structural diff of every source, keyed sensibly.

Generic on purpose: no source is special-cased. Lists of objects are matched by the first identity property every
item has and no two share (Identity, Thumbprint, id, ...), lists of plain values are compared as sets (order is
not a fact), objects property by property. A few properties that change on every run without meaning anything
(which front end answered, a request id, the last directory sync time) are left out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hma_check.contract.snapshot import Snapshot

IDENTITY_KEYS = ("Identity", "Thumbprint", "id", "userPrincipalName", "skuId", "keyId", "Name", "url", "host",
                 "DomainName", "servicePlanName")
OPAQUE_KEYS = ("id", "skuId", "keyId", "Thumbprint")           # identities a reader needs a name beside
LABEL_KEYS = ("displayName", "Name", "skuPartNumber", "Subject")
VOLATILE_KEYS = frozenset({"request_id", "x_feserver", "onPremisesLastSyncDateTime"})
ABSENT = "(absent)"


@dataclass
class FactChange:
    source: str                  # the source key, name@scope
    kind: str                    # source added|source removed|status|item added|item removed|value added|value removed|changed
    item: str | None = None      # which element of a list, by its identity
    path: str = ""               # which property inside it
    old: Any = None
    new: Any = None

    def text(self, limit: int = 160) -> str:
        where = " ".join(part for part in (f"[{self.item}]" if self.item else "", self.path) if part)
        if self.kind in ("source added", "source removed"):
            return f"{self.kind} ({_clip(self.new if self.kind == 'source added' else self.old, limit)})"
        if self.kind == "status":
            return f"status {self.old} -> {_clip(self.new, limit)}"
        if self.kind == "item added":
            return f"+ {self.item}"
        if self.kind == "item removed":
            return f"- {self.item}"
        if self.kind == "value added":
            return f"{where}: + {_show(self.new, limit)}"
        if self.kind == "value removed":
            return f"{where}: - {_show(self.old, limit)}"
        return f"{where}: {_show(self.old, limit)} -> {_show(self.new, limit)}"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "item": self.item, "path": self.path, "old": self.old,
                "new": self.new}


def _show(value: Any, limit: int) -> str:
    """A value as JSON (so "true", true and "" read differently), cut to ``limit``."""
    return _clip(value if value == ABSENT else json.dumps(value, ensure_ascii=False, default=str), limit)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def diff_snapshots(old: Snapshot, new: Snapshot) -> list[FactChange]:
    changes: list[FactChange] = []
    for key in sorted(set(old.sources) | set(new.sources)):
        before, after = old.sources.get(key), new.sources.get(key)
        if before is None:
            changes.append(FactChange(key, "source added", new=_status_text(after)))
        elif after is None:
            changes.append(FactChange(key, "source removed", old=_status_text(before)))
        elif before.status != after.status:
            changes.append(FactChange(key, "status", old=before.status, new=_status_text(after)))
        elif before.ok:
            _diff(key, before.data, after.data, None, "", changes)
    return changes


def _status_text(result: Any) -> str:
    return result.status if result.ok else f"{result.status}: {result.error}"


def _diff(source: str, old: Any, new: Any, item: str | None, path: str, out: list[FactChange]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if key in VOLATILE_KEYS:
                continue
            _diff(source, old.get(key, ABSENT), new.get(key, ABSENT), item, _join(path, key), out)
    elif isinstance(old, list) and isinstance(new, list):
        _diff_list(source, old, new, item, path, out)
    elif old != new or type(old) is not type(new):
        out.append(FactChange(source, "changed", item, path, old, new))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _diff_list(source: str, old: list, new: list, item: str | None, path: str, out: list[FactChange]) -> None:
    key = _identity_key(old, new)
    if key is None:   # plain values, or objects nothing identifies: compared whole, as sets (order is not a fact)
        before = {_canonical(v): v for v in old}
        after = {_canonical(v): v for v in new}
        for text in [t for t in after if t not in before]:
            out.append(FactChange(source, "value added", item, path, new=after[text]))
        for text in [t for t in before if t not in after]:
            out.append(FactChange(source, "value removed", item, path, old=before[text]))
        return
    before = {str(v[key]): v for v in old}
    after = {str(v[key]): v for v in new}
    for identity in after:
        label = _label(after[identity], key, path, item)
        if identity not in before:
            out.append(FactChange(source, "item added", label, new=after[identity]))
        else:
            # Nested lists keep their parent's label and extend the path, so a change reads in one line.
            _diff(source, before[identity], after[identity], label, "", out)
    for identity in before:
        if identity not in after:
            out.append(FactChange(source, "item removed", _label(before[identity], key, path, item), old=before[identity]))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _identity_key(old: list, new: list) -> str | None:
    items = old + new
    if not all(isinstance(v, dict) for v in items):
        return None
    for key in IDENTITY_KEYS:
        if all(isinstance(v.get(key), (str, int)) for v in items) and len({str(v[key]) for v in old}) == len(old) \
                and len({str(v[key]) for v in new}) == len(new):
            return key
    return None


def _label(value: dict, key: str, path: str, parent: str | None) -> str:
    own = str(value[key])
    for extra in LABEL_KEYS if key in OPAQUE_KEYS else ():
        if isinstance(value.get(extra), str) and value[extra]:
            own = f"{value[extra]} ({own})"
            break
    if path:
        own = f"{path}={own}"
    return f"{parent} / {own}" if parent else own
