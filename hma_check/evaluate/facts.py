"""What check expressions see of the evidence: sources as values, and MissingFact when a source is not ok.

``exchange.servers`` in an expression is the data of that source. A source that failed, was skipped or was never
collected raises MissingFact instead of returning anything, so no expression can turn missing data into a PASS.
A per-server (tenant, URL...) source is a ``Scoped`` value: index it by scope (``exchange.mapi_virtual_directories
[item.Name]``), iterate it (every item of every part; raises if any part is missing) or use ``.parts`` to handle each
scope on its own.

A per-server source covers the servers of exchange.servers the contract says have it (sources.SourceSpec.servers):
each of them is a part, collected or not, so a server missing from the evidence is ERROR for that server instead of
silently absent. A server the contract leaves out (an Edge or Exchange 2010 server), and an organisation-wide source
that cannot exist on the organisation's builds, raise NotApplicable: the check is NOT_APPLICABLE with the reason.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Iterator

from hma_check.contract import sources as source_registry
from hma_check.contract.snapshot import Snapshot, SourceResult, source_key
from hma_check.errors import HmaCheckError
from hma_check.evaluate.reads import Watch

SERVERS = "exchange.servers"


class MissingFact(HmaCheckError):
    """A fact an expression needs was not collected. ``key`` names the source (and scope), ``reason`` says why."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


class NotApplicable(MissingFact):
    """A source that does not exist here by design (the contract in sources.py says so): NOT_APPLICABLE, not ERROR."""


def _why_not(result: SourceResult | None, key: str) -> MissingFact:
    if result is None:
        return MissingFact(key, "not collected")
    return MissingFact(key, f"{result.status}: {result.error or 'no reason recorded'}")


class Part:
    """One scope of a scoped source. ``data`` raises MissingFact when that scope was not collected, NotApplicable
    when the contract says the scope has no such source, and MissingFact when ``problem`` says the answer cannot be
    complete (no object where every covered server has one)."""

    def __init__(self, name: str, scope: str, result: SourceResult | None,
                 record: Callable[[str], None] | None = None, *, not_applicable: str | None = None,
                 problem: str | None = None, watch: Watch | None = None) -> None:
        self.name = name
        self.scope = scope
        self._result = result
        self._record = record
        self._watch = watch
        self.not_applicable = not_applicable
        self._problem = problem
        # worked out once: a part never changes, and every read of a scoped source asks each part (200 per read)
        self.ok = not_applicable is None and problem is None and result is not None and result.ok
        self.key = source_key(name, scope)

    @property
    def error(self) -> str | None:
        if self.ok:
            return None
        return self._why().reason

    def _why(self) -> MissingFact:
        if self.not_applicable is not None:
            return NotApplicable(self.key, f"not applicable: {self.not_applicable}")
        if self._problem is not None:
            return MissingFact(self.key, self._problem)
        return _why_not(self._result, self.key)

    @property
    def data(self) -> Any:
        if self._record is not None:
            self._record(self.key)
        if not self.ok:
            raise self._why()
        data = self._result.data  # type: ignore[union-attr]
        return data if self._watch is None else self._watch.root(self._label, data)

    @cached_property
    def _label(self) -> str:
        """How the excerpt names this scope's data: exchange.exchange_certificates['EX01']."""
        return f"{self.name}['{self.scope}']"

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
    """A source collected once per server, tenant, URL or endpoint.

    ``build`` makes the parts on first use; for a per-server source it raises MissingFact when exchange.servers is
    not there to say which servers must be covered.
    """

    def __init__(self, name: str, build: Callable[[], list[Part]], record: Callable[[str], None] | None = None,
                 watch: Watch | None = None, index: Callable[[list[Part]], dict[str, Part]] | None = None) -> None:
        self.name = name
        self._record = record
        self._watch = watch
        self._build = build
        self._index = index or scope_index
        self._built: list[Part] | None = None
        self._by_scope: dict[str, Part] = {}

    def _all(self) -> list[Part]:
        if self._built is None:
            self._built = self._build()
            self._by_scope = self._index(self._built)
        return self._built

    @property
    def parts(self) -> list[Part]:
        parts = self._all()
        if not parts:
            if self._record is not None:
                self._record(self.name)
            raise MissingFact(self.name, "not collected")
        return list(parts)

    @property
    def scopes(self) -> list[str]:
        return [p.scope for p in self.parts]

    def part(self, scope: str) -> Part:
        if self._watch is not None:
            self._watch.used_as_key(scope)
        self._all()
        found = self._by_scope.get(str(scope).lower())
        return found if found is not None else Part(self.name, str(scope), None, self._record, watch=self._watch)

    def __getitem__(self, scope: str) -> Any:
        return self.part(scope).data

    def covering(self, scopes: Any, absent: str) -> "Scoped":
        """This source with a part for every one of ``scopes`` too: a scope it has no result for gets a part that says
        why (``absent``), so a for_each over it gives that scope an ERROR instead of no finding at all."""
        parts = self._all()
        have = {p.scope.lower() for p in parts}
        missing = [s for s in dict.fromkeys(str(s) for s in scopes if s) if s.lower() not in have]
        extra = [Part(self.name, scope, None, self._record, problem=absent, watch=self._watch) for scope in missing]
        return Scoped(self.name, lambda: parts + extra, self._record, self._watch)

    def __contains__(self, scope: object) -> bool:
        self._all()
        found = self._by_scope.get(str(scope).lower())
        return found is not None and found.not_applicable is None

    def _covered_parts(self) -> list[Part]:
        """The parts that exist. A part that is missing makes the whole aggregate ERROR (it cannot pass on partial
        data); a part that does not exist by design is left out, and only when every part is left out is the
        aggregate NOT_APPLICABLE."""
        parts = self.parts
        if self._record is not None:
            for p in parts:
                if not p.ok:
                    self._record(p.key)
        failed = [p for p in parts if not p.ok and p.not_applicable is None]
        if failed:
            detail = "; ".join(f"{p.scope}: {p.error}" for p in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            covered = sum(1 for p in parts if p.not_applicable is None)
            raise MissingFact(self.name, f"not collected for {len(failed)} of {covered} scopes: {detail}{more}")
        if all(p.not_applicable is not None for p in parts):
            detail = "; ".join(f"{p.scope}: {p.not_applicable}" for p in parts[:5])
            raise NotApplicable(self.name, f"not applicable to any server: {detail}")
        return [p for p in parts if p.ok]

    def __iter__(self) -> Iterator[Any]:
        """Every item of every part that exists (see _covered_parts)."""
        for p in self._covered_parts():
            yield from p.items

    def __len__(self) -> int:
        return sum(len(p.items) for p in self._covered_parts())

    def __repr__(self) -> str:
        return f"Scoped({self.name}, {len(self._all())} parts)"


def scope_index(parts: list[Part]) -> dict[str, Part]:
    """The first part of each scope, by its lower-case name."""
    by_scope: dict[str, Part] = {}
    for part in parts:
        by_scope.setdefault(part.scope.lower(), part)
    return by_scope


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


class Used(list[str]):
    """Source keys in first-read order, each once. Membership is a set's: a finding of HMA-AUTH-011 reads the
    certificates of every server, and checking each key against a list made that quadratic."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: set[str] = set()

    def add(self, key: str) -> None:
        if key not in self._keys:
            self._keys.add(key)
            self.append(key)

    def add_all(self, keys: list[str]) -> None:
        """add() of each of ``keys``, which hold no key twice (another Used, or a copy of one): a ``let`` saved
        for every item of HMA-AUTH-011 read the certificates of all 200 servers, recorded again for each item."""
        if not self._keys.isdisjoint(keys):
            keys = [key for key in keys if key not in self._keys]
        self._keys.update(keys)
        self.extend(keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


class Recording:
    """``with facts.recording() as used``: the keys read inside the block, added to the enclosing block's too. A
    class, not a @contextmanager generator: the engine enters several per item (thousands per check)."""

    __slots__ = ("facts", "outer", "used")

    def __init__(self, facts: "Facts") -> None:
        self.facts = facts

    def __enter__(self) -> Used:
        self.outer, self.used = self.facts._used, Used()
        self.facts._used = self.used
        return self.used

    def __exit__(self, *exc: object) -> None:
        self.facts._used = outer = self.outer
        if outer is not None:
            outer.add_all(self.used)


class Facts:
    """The evidence as expressions see it; built once per evaluation.

    Every source an expression reads is recorded (``recording()``), so each finding can cite exactly the facts it
    was decided on; while ``watch`` has a log, the properties read inside them are logged too
    (hma_check.evaluate.reads).
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._by_name: dict[str, list[SourceResult]] = {}
        for result in snapshot.sources.values():
            self._by_name.setdefault(result.name, []).append(result)
        self.namespaces = {prefix: Namespace(self, prefix) for prefix in source_registry.NAMESPACES}
        self._used: Used | None = None
        self._parts_cache: dict[str, list[Part]] = {}   # the evidence does not change while it is evaluated
        self._index_cache: dict[str, dict[str, Part]] = {}
        self._servers: list[dict[str, Any]] | None = None
        self._ok_keys: dict[str, frozenset[str]] = {}
        self.watch = Watch()
        # ``let`` bindings that read only the evidence, evaluated once for the whole evaluation (evaluate.lets)
        self.saved_lets: dict[Any, Any] = {}
        # the answers of 'where' filters that read only the item (evaluate.engine._where), by text and item
        self.saved_wheres: dict[tuple[str, int, str | None], tuple[bool, Any]] = {}

    def _record(self, key: str) -> None:
        if self._used is not None:
            self._used.add(key)

    def record_all(self, keys: list[str]) -> None:
        """Record sources read elsewhere (a ``let`` evaluated once for every item of a check) as if read here:
        ``keys`` as a Used holds them, each once."""
        if self._used is not None:
            self._used.add_all(keys)

    def recording(self) -> "Recording":
        """Collect the keys of every source read inside the block (in first-read order)."""
        return Recording(self)

    def result(self, key: str) -> SourceResult | None:
        return self.snapshot.sources.get(key)

    def results(self, name: str) -> list[SourceResult]:
        return self._by_name.get(name, [])

    def ok_keys(self, name: str) -> frozenset[str]:
        """The keys of the source's results that were collected (computed once per source)."""
        found = self._ok_keys.get(name)
        if found is None:
            found = self._ok_keys[name] = frozenset(r.key for r in self.results(name) if r.ok)
        return found

    def is_scoped(self, name: str) -> bool:
        spec = source_registry.BY_NAME.get(name)
        return spec is not None and spec.scope is not None

    def get(self, name: str) -> Any:
        if self.is_scoped(name):
            # A new value per read (its parts are built once): every read records the server list it covers.
            return Scoped(name, lambda: self._parts(name), self._record, self.watch,
                          index=lambda parts: self._scope_index(name, parts))
        self._record(name)
        found = self.results(name)
        result = found[0] if found else None
        if result is None or not result.ok:
            not_applicable = self._absent_by_design(name, result)
            if not_applicable is not None:
                raise NotApplicable(name, f"not applicable: {not_applicable}")
            raise _why_not(result, name)
        return self.watch.root(name, result.data)

    # ------------------------------------------------------------------------------------------ coverage

    def servers(self) -> list[dict[str, Any]]:
        """exchange.servers, which says which servers a per-server source must cover; MissingFact when absent."""
        return list(self._server_list())

    def _server_list(self) -> list[dict[str, Any]]:
        """servers(), recorded as read, without a copy (every read of a per-server source asks)."""
        self._record(SERVERS)
        found = self.results(SERVERS)
        result = found[0] if found else None
        if result is None or not result.ok or not isinstance(result.data, list):
            why = _why_not(result, SERVERS).reason if result is None or not result.ok else "not a list"
            raise MissingFact(SERVERS, f"{why}, so the servers a per-server source must cover are unknown")
        if self._servers is None:     # worked out once: every read of a per-server source asks
            self._servers = [s for s in result.data
                             if isinstance(s, dict) and isinstance(s.get("Name"), str) and s["Name"]]
        return self._servers

    def _scope_index(self, name: str, parts: list[Part]) -> dict[str, Part]:
        """scope_index of a source's cached parts, built once per source instead of once per read."""
        found = self._index_cache.get(name)
        if found is None or self._parts_cache.get(name) is not parts:
            found = self._index_cache[name] = scope_index(parts)
        return found

    def _parts(self, name: str) -> list[Part]:
        spec = source_registry.BY_NAME[name]
        if spec.servers is not None:
            self._server_list()   # read again on every use: each finding cites the server list its coverage came from
        if name not in self._parts_cache:
            self._parts_cache[name] = self._build_parts(name)
        return self._parts_cache[name]

    def _build_parts(self, name: str) -> list[Part]:
        spec = source_registry.BY_NAME[name]
        results = self.results(name)
        if spec.servers is None:
            return [Part(name, r.scope or "", r, self._record, watch=self.watch) for r in results]
        by_scope = {r.scope.lower(): r for r in results if r.scope}
        # A result without a scope speaks for every server (a collector that could not run at all says why once).
        fallback = next((r for r in results if not r.scope), None)
        parts = []
        for server in self.servers():
            scope = server["Name"]
            result = by_scope.pop(scope.lower(), fallback)
            excluded = spec.excluded(server)
            problem = None
            if excluded is None and result is not None and result.ok and spec.one_or_more and not result.data:
                command = (result.command or spec.filled_by).split(" (imported from", 1)[0]
                problem = (f"{command} returned no object, but every server it covers has at least one: the answer "
                           "is incomplete (or the object was removed); verify by hand")
            parts.append(Part(name, scope, result, self._record, not_applicable=excluded, problem=problem,
                              watch=self.watch))
        # Results for servers exchange.servers does not list are evidence too; they are evaluated as they are.
        parts += [Part(name, r.scope or "", r, self._record, watch=self.watch) for r in by_scope.values()]
        return parts

    def _absent_by_design(self, name: str, result: SourceResult | None) -> str | None:
        """Why an organisation-wide source that was skipped cannot exist in this organisation, or None."""
        spec = source_registry.BY_NAME.get(name)
        if spec is None or spec.minimum_build is None or result is None or result.status != "skipped":
            return None
        try:
            servers = self.servers()
        except MissingFact:
            return None
        return spec.absent_everywhere(servers)

    def availability(self, name: str) -> tuple[str, str | None]:
        """('ok' | 'not_applicable' | 'error', why) for a required source. A scoped source is usable when at least
        one part was collected; it is not applicable when the contract leaves out every server."""
        if self.is_scoped(name):
            try:
                parts = self._parts(name)
            except MissingFact as exc:
                return "error", f"{exc.key} {exc.reason}"
            if not parts:
                return "error", "not collected"
            if any(p.ok for p in parts):
                return "ok", None
            if all(p.not_applicable is not None for p in parts):
                detail = "; ".join(f"{p.scope}: {p.not_applicable}" for p in parts[:5])
                return "not_applicable", f"not applicable to any server ({detail})"
            failed = "; ".join([f"{p.scope}: {p.error}" for p in parts if p.not_applicable is None][:5])
            return "error", f"not collected for any scope ({failed})"
        found = self.results(name)
        if not found:
            return "error", "not collected"
        result = found[0]
        if result.ok:
            return "ok", None
        not_applicable = self._absent_by_design(name, result)
        if not_applicable is not None:
            return "not_applicable", f"not applicable: {not_applicable}"
        return "error", f"{result.status}: {result.error}"

    def skipped(self, name: str) -> bool:
        """Whether the source was skipped on purpose (every result of it has status skipped)."""
        found = self.results(name)
        return bool(found) and all(r.status == "skipped" for r in found)
