"""What check expressions see of the evidence: sources as values, and MissingFact when a source is not ok.

``exchange.servers`` in an expression is the data of that source. A source that failed, was skipped or was never
collected raises MissingFact instead of returning anything, so no expression can turn missing data into a PASS.
A per-server (tenant, URL...) source is a ``Scoped`` value: index it by scope (``exchange.mapi_virtual_directories
[item.Name]``), iterate it (every item of every part; raises if any part is missing) or use ``.parts`` to handle each
scope on its own.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from hma_check.contract import sources as source_registry
from hma_check.contract.snapshot import Snapshot, SourceResult, source_key


class MissingFact(Exception):
    """A fact an expression needs was not collected. ``key`` names the source (and scope), ``reason`` says why."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


def _why_not(result: SourceResult | None, key: str) -> MissingFact:
    if result is None:
        return MissingFact(key, "not collected")
    return MissingFact(key, f"{result.status}: {result.error or 'no reason recorded'}")


class Part:
    """One scope of a scoped source. ``data`` raises MissingFact when that scope was not collected."""

    def __init__(self, name: str, scope: str, result: SourceResult | None,
                 record: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.scope = scope
        self._result = result
        self._record = record

    @property
    def ok(self) -> bool:
        return self._result is not None and self._result.ok

    @property
    def key(self) -> str:
        return source_key(self.name, self.scope)

    @property
    def error(self) -> str | None:
        if self.ok:
            return None
        return _why_not(self._result, self.key).reason

    @property
    def data(self) -> Any:
        if self._record is not None:
            self._record(self.key)
        if not self.ok:
            raise _why_not(self._result, self.key)
        return self._result.data  # type: ignore[union-attr]

    @property
    def items(self) -> list[Any]:
        data = self.data
        return data if isinstance(data, list) else [data]

    @property
    def result(self) -> SourceResult | None:
        return self._result

    def __repr__(self) -> str:
        return f"Part({self.key}, ok={self.ok})"


class Scoped:
    """A source collected once per server, tenant, URL or endpoint."""

    def __init__(self, name: str, results: list[SourceResult], record: Callable[[str], None] | None = None) -> None:
        self.name = name
        self._record = record
        self._parts = [Part(name, r.scope or "", r, record) for r in results]
        self._by_scope = {p.scope.lower(): p for p in self._parts}

    @property
    def parts(self) -> list[Part]:
        if not self._parts:
            if self._record is not None:
                self._record(self.name)
            raise MissingFact(self.name, "not collected")
        return list(self._parts)

    @property
    def scopes(self) -> list[str]:
        return [p.scope for p in self.parts]

    def part(self, scope: str) -> Part:
        found = self._by_scope.get(str(scope).lower())
        return found if found is not None else Part(self.name, str(scope), None, self._record)

    def __getitem__(self, scope: str) -> Any:
        return self.part(scope).data

    def __contains__(self, scope: object) -> bool:
        return str(scope).lower() in self._by_scope

    def __iter__(self) -> Iterator[Any]:
        parts = self.parts
        failed = [p for p in parts if not p.ok]
        if failed:
            if self._record is not None:
                for p in failed:
                    self._record(p.key)
            detail = "; ".join(f"{p.scope}: {p.error}" for p in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            raise MissingFact(self.name, f"not collected for {len(failed)} of {len(parts)} scopes: {detail}{more}")
        for p in parts:
            yield from p.items

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"Scoped({self.name}, {len(self._parts)} parts)"


class Namespace:
    """``exchange``, ``graph``, ``os``, ``probe``: attribute access returns a source's data or a Scoped value."""

    def __init__(self, facts: "Facts", prefix: str) -> None:
        self._facts = facts
        self._prefix = prefix

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        name = f"{self._prefix}.{attribute}"
        if not source_registry.is_known(name):
            raise AttributeError(f"unknown source {name}")
        return self._facts.get(name)

    def __repr__(self) -> str:
        return f"Namespace({self._prefix})"


class Facts:
    """The evidence as expressions see it; built once per evaluation.

    Every source an expression reads is recorded (``recording()``), so each finding can cite exactly the facts it
    was decided on.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._by_name: dict[str, list[SourceResult]] = {}
        for result in snapshot.sources.values():
            self._by_name.setdefault(result.name, []).append(result)
        self.namespaces = {prefix: Namespace(self, prefix) for prefix in source_registry.NAMESPACES}
        self._used: list[str] | None = None

    def _record(self, key: str) -> None:
        if self._used is not None and key not in self._used:
            self._used.append(key)

    @contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Collect the keys of every source read inside the block (in first-read order)."""
        outer = self._used
        self._used = []
        try:
            yield self._used
        finally:
            inner = self._used
            self._used = outer
            if outer is not None:
                for key in inner:
                    if key not in outer:
                        outer.append(key)

    def result(self, key: str) -> SourceResult | None:
        return self.snapshot.sources.get(key)

    def results(self, name: str) -> list[SourceResult]:
        return self._by_name.get(name, [])

    def is_scoped(self, name: str) -> bool:
        spec = source_registry.BY_NAME.get(name)
        return spec is not None and spec.scope is not None

    def get(self, name: str) -> Any:
        if self.is_scoped(name):
            return Scoped(name, self.results(name), self._record)
        self._record(name)
        found = self.results(name)
        result = found[0] if found else None
        if result is None or not result.ok:
            raise _why_not(result, name)
        return result.data

    def skipped(self, name: str) -> bool:
        """Whether the source was skipped on purpose (every result of it has status skipped)."""
        found = self.results(name)
        return bool(found) and all(r.status == "skipped" for r in found)

    def status(self, name: str) -> tuple[bool, str | None]:
        """(usable, why not) for a required source: a scoped one needs at least one part collected."""
        found = self.results(name)
        if not found:
            return False, "not collected"
        if self.is_scoped(name):
            if not any(r.ok for r in found):
                failed = "; ".join(f"{r.scope}: {r.status}: {r.error}" for r in found[:5])
                return False, f"not collected for any scope ({failed})"
            return True, None
        result = found[0]
        return (True, None) if result.ok else (False, f"{result.status}: {result.error}")
