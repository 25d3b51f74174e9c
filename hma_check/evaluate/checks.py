"""Load checks files: validate every field in code and compile every expression once, or fail with file, line, id.

A checks file is YAML:

    version: 1
    areas: {topology: Topology and versions, ...}        # optional: report section titles, in order
    checks: [ {id, title, area, severity, requires, when, for_each, where, on_empty, subject, let,
               assert, expect, actual, why, references, enable, rollback, phase, caused_by}, ... ]
    steps:  [ {id, title, phase, requires, when, done, needs, enable, rollback, why, references}, ... ]   # optional

docs/writing-checks.md documents each field. Static checks made here, so a mistake never waits for a customer's
evidence to show up: unknown or missing keys, duplicate ids (across every file loaded), expressions that do not
compile, sources that do not exist, sources used but not listed in ``requires``, and enable/rollback
interpolations that do not go through a PowerShell quoting filter.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from jinja2 import TemplateSyntaxError

from hma_check.evaluate import budget, compiled_store, expr
from hma_check.contract import sources
from hma_check.errors import ChecksError
from hma_check.contract.findings import SEVERITIES
from hma_check.util.yaml_file import YamlList, YamlMap, loads_yaml_bytes, read_yaml_bytes
from hma_check.util.yaml_schema import Schema, located

ID_PATTERN = re.compile(r"^[A-Z][A-Z0-9]+(-[A-Z0-9]+)*-\d{3,}$")
# Runbook phases, in the order they run. Phase 1 holds only changes clients cannot notice; a change clients notice
# comes in phase 2 with its impact said in the step; the switch is phase 3, and it and every later phase wait for a
# READY verdict (hma_check.evaluate.settle). Microsoft's order:
# https://learn.microsoft.com/microsoft-365/enterprise/configure-exchange-server-for-hybrid-modern-authentication
PREPARE, PREPARE_WITH_IMPACT, SWITCH, VALIDATE, OWA_ECP, HARDEN = 1, 2, 3, 4, 5, 6
PHASES = {
    PREPARE: "Prepare: no client impact",
    PREPARE_WITH_IMPACT: "Prepare, with client impact: each step says what clients notice",
    SWITCH: "Switch: clients move to modern authentication at their next sign-in",
    VALIDATE: "Validate: HMA works for every client before anything else changes",
    OWA_ECP: "Outlook on the web and the EAC (optional): browser sign-in moves to Entra ID",
    HARDEN: "Harden, once HMA works: legacy authentication for a pilot group, hybrid hygiene",
}
ON_EMPTY = ("error", "not_applicable", "fail")
IF_SKIPPED = ("error", "not_applicable")
RESERVED_NAMES = frozenset({"item", "scope", "now", "loop", *sources.NAMESPACES})

CHECK_KEYS = {
    "id": True, "title": True, "area": True, "severity": True, "assert": True, "expect": True, "actual": True,
    "why": True, "references": True,
    "requires": False, "when": False, "for_each": False, "where": False, "on_empty": False, "subject": False,
    "let": False, "enable": False, "rollback": False, "phase": False, "tags": False, "caused_by": False,
    "if_skipped": False, "affected": False,
}
CAUSE_KEYS = {"check": True, "subject": False}
STEP_KEYS = {
    "id": True, "title": True, "phase": True, "enable": True, "why": True, "references": True,
    "requires": False, "when": False, "done": False, "rollback": False, "subject": False, "let": False,
    "needs": False,
}
TOP_KEYS = {"version": True, "checks": True, "areas": False, "steps": False}


# Expressions already parsed, checked and compiled in this process, by (source, template, powershell): the same
# text recurs across checks ('{{ item.Name }}' 22 times, 'exchange.servers' 17; 451 compiled, 307 distinct), and
# the environment they compile in never changes. A compiled expression holds no state between evaluations.
_COMPILED: dict[tuple[str, bool, bool], tuple[frozenset[str], frozenset[str], "Compiled"]] = {}


@dataclass
class Compiled:
    """A compiled expression or template with its source text, kept for messages. One only a failure needs (a
    runbook step) keeps its checked syntax tree and is compiled on first use: most never are."""

    source: str
    compiled: Any
    is_template: bool
    tree: Any = None
    plain: tuple[str, ...] | None = None     # '{{ item.Name }}', '{{ scope }}': read directly (expr.plain_lookup)

    @property
    def run(self) -> Any:
        if self.compiled is None:
            self.compiled = expr.compile_parsed(self.tree, self.source, expression=not self.is_template)
        return self.compiled

    def __call__(self, context: dict[str, Any]) -> Any:
        """Evaluate under a fresh budget (hma_check.evaluate.budget): over it is BudgetExceeded, never a hang. A plain
        '{{ item.Name }}' is read directly: it has nothing to meter."""
        if self.plain is not None:
            value = expr.read_plain(self.plain, context)
            if value is not None:
                return value
        used, token = budget.begin()      # budget.metered(self.source), entered and left inline
        try:
            compiled = self.compiled if self.compiled is not None else self.run
            if self.is_template:
                return expr.run_template(compiled, context)
            return expr.run_expression(compiled, context)
        finally:
            budget.end(used, token, self.source)


@dataclass
class Cause:
    """``caused_by`` entry: a failure of ``check`` (for the subject the template renders, or for any subject) is
    the likely root cause of this check's failure, so the report shows the two as one problem."""

    check: str
    subject: Compiled | None = None
    line: int = 0


@dataclass
class Check:
    id: str
    title: str
    area: str
    severity: str
    expect: str
    why: str
    references: list[str]
    assertion: Compiled
    actual: Compiled
    subject: Compiled | None
    requires: tuple[str, ...] = ()
    when: Compiled | None = None
    for_each: Compiled | None = None
    where: Compiled | None = None
    on_empty: str = "error"
    let: tuple[tuple[str, Compiled], ...] = ()
    enable: Compiled | None = None
    rollback: Compiled | None = None
    phase: int | None = None
    tags: tuple[str, ...] = ()
    caused_by: tuple[Cause, ...] = ()
    # The names the assertion and each 'let' read: which values made a failed assertion false (the excerpt,
    # hma_check.evaluate.reads); its 'and' parts are compiled on the first failure (assert_parts).
    assert_names: frozenset[str] = frozenset()
    let_names: dict[str, frozenset[str]] = field(default_factory=dict)
    where_names: frozenset[str] | None = None   # None: not worked out, so the 'where' is never taken as item-only
    if_skipped: str = "error"             # a required source skipped on purpose: ERROR, or NOT_APPLICABLE
    affected: Compiled | None = None      # the users a non-PASS finding affects (one action-plan row each)
    file: str = ""
    line: int = 0
    raw: dict[str, Any] = field(default_factory=dict)   # the YAML as written, for `checks explain`

    def lets_read_by(self, names: frozenset[str]) -> list[str]:
        """The ``let`` bindings an expression reading ``names`` depends on, directly or through other bindings, in
        declaration order."""
        found: set[str] = set()
        pending = [name for name in names if name in self.let_names]
        while pending:
            name = pending.pop()
            if name not in found:
                found.add(name)
                pending.extend(n for n in self.let_names[name] if n in self.let_names)
        return [name for name, _ in self.let if name in found]

    @cached_property
    def assert_lets(self) -> tuple[str, ...]:
        """lets_read_by the assertion, worked out once: every finding's excerpt needs it."""
        return tuple(self.lets_read_by(self.assert_names))

    @property
    def assert_parts(self) -> list[tuple[Callable[..., Any], frozenset[str]]]:
        """The assertion's 'and' parts, each compiled alone with the names it reads (only a failure needs them)."""
        return expr.conjuncts(self.assertion.source)


@dataclass
class Step:
    id: str
    title: str
    phase: int
    enable: Compiled
    why: str
    references: list[str]
    requires: tuple[str, ...] = ()
    when: Compiled | None = None
    done: Compiled | None = None
    rollback: Compiled | None = None
    subject: Compiled | None = None
    let: tuple[tuple[str, Compiled], ...] = ()
    needs: tuple[str, ...] = ()        # steps that must be ready (or already done) for this one to be live
    file: str = ""
    line: int = 0
    needs_line: int = 0
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckSet:
    checks: list[Check] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    areas: dict[str, str] = field(default_factory=dict)
    files: list[dict[str, str]] = field(default_factory=list)   # [{path, sha256}]

    def by_id(self, check_id: str) -> Check | Step | None:
        items: list[Check | Step] = [*self.checks, *self.steps]
        for item in items:
            if item.id == check_id:
                return item
        return None

    def area_title(self, area: str) -> str:
        return self.areas.get(area) or area.replace("-", " ").capitalize()


def load_checks(paths: list[str | Path]) -> CheckSet:
    """Load and validate every file; the union must have unique ids and name only existing checks as causes."""
    result = CheckSet()
    seen: dict[str, str] = {}
    for path in paths:
        file = str(Path(path))
        raw = read_yaml_bytes(file, error=ChecksError)   # read once: the hash recorded is of the bytes evaluated
        _load_document(loads_yaml_bytes(raw, source=file, error=ChecksError), file, result, seen)
        result.files.append({"path": file, "sha256": hashlib.sha256(raw).hexdigest()})
    ids = [check.id for check in result.checks]
    for check in result.checks:
        for cause in check.caused_by:
            if cause.check not in ids or cause.check == check.id:
                close = difflib.get_close_matches(cause.check, [i for i in ids if i != check.id], n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ChecksError(f"check {check.id}: 'caused_by' names {cause.check}, which is not another check "
                                  f"loaded{hint}", path=check.file, line=cause.line)
    _check_needs(result)
    return result


def _check_needs(loaded: CheckSet) -> None:
    """Every step a step needs exists, comes before it (in an earlier phase or earlier in the same phase)."""
    position = {step.id: (step.phase, index) for index, step in enumerate(loaded.steps)}
    for index, step in enumerate(loaded.steps):
        for needed in step.needs:
            if needed not in position:
                raise ChecksError(f"step {step.id}: 'needs' names {needed}, which is not a step of the loaded files",
                                  path=step.file, line=step.needs_line)
            if position[needed] >= (step.phase, index):
                raise ChecksError(f"step {step.id}: 'needs' names {needed}, which does not come before it",
                                  path=step.file, line=step.needs_line)


def _load_document(document: Any, file: str, into: CheckSet, seen: dict[str, str]) -> None:
    schema = Schema(located(document, file, ChecksError, "checks file"))
    _keys(schema, document, (), TOP_KEYS, hint="with 'version' and 'checks'")
    if document["version"] != 1:
        raise ChecksError(f"unsupported checks file version {document['version']!r} (this hma-check reads 1)",
                          path=file, line=document.line_of("version"))
    areas = document.get("areas")
    if areas is not None:
        for area, title in schema.mapping(areas, ("areas",), hint="of area ids to titles").items():
            into.areas.setdefault(area, schema.text(title, ("areas", area)))
    sections: tuple[tuple[str, Callable[..., Check | Step], list[Any]], ...] = (
        ("checks", _load_check, into.checks), ("steps", _load_step, into.steps))
    for key, load, loaded in sections:
        items = schema.list_of(document.get(key, YamlList()), (key,), what=key)   # 'checks' is required
        for index, raw in enumerate(items):
            schema.mapping(raw, (key, index))
            item = load(raw, file, document[key].line_of(index))
            if item.id in seen:
                raise ChecksError(f"check {item.id}: duplicate id (first defined at {seen[item.id]})", path=file,
                                  line=item.line)
            seen[item.id] = f"{file}:{item.line}"
            loaded.append(item)


def _keys(schema: Schema, node: Any, where: tuple[Any, ...], allowed: dict[str, bool], hint: str = "") -> None:
    """Known keys only, required ones present (``allowed``: key -> required)."""
    schema.mapping(node, where, keys=allowed, required=[key for key, required in allowed.items() if required],
                   hint=hint)


class _Builder:
    """Compiles the fields of one check or step, with errors that name file, line and id."""

    def __init__(self, node: YamlMap, file: str, what: str) -> None:
        self.node, self.file, self.what = node, file, what
        self.schema = Schema(located(node, file, ChecksError, what))
        self.used_sources: set[str] = set()
        self.names: dict[str, frozenset[str]] = {}   # field ('assert', 'let.state') -> the names it reads

    def fail(self, message: str, key: str | None = None, line: int | None = None) -> ChecksError:
        return ChecksError(f"{self.what}: {message}", path=self.file,
                           line=line if line is not None else self.node.line_of(key) if key else self.node.line)

    def text(self, key: str, *, required: bool = True) -> str | None:
        value = self.node.get(key)
        if value is None and not required:
            return None
        return self.schema.text(value, (key,)).strip()

    def compile(self, key: str, source: Any, *, template: bool, line: int | None = None,
                powershell: bool = False, later: bool = False) -> Compiled:
        line = line if line is not None else self.node.line_of(key)
        if not isinstance(source, str) or not source.strip():
            raise self.fail(f"'{key}' must be a non-empty {'template' if template else 'expression'}", line=line)
        cache_key = (source, template, powershell)
        known = _COMPILED.get(cache_key) or self._from_store(cache_key)
        if known is not None:
            self.used_sources |= known[0]
            self.names[key] = known[1]
            return known[2]
        try:
            tree = expr.parse(source, expression=not template)
        except TemplateSyntaxError as exc:
            raise self.fail(f"'{key}' does not compile: {exc.message}", line=line) from None
        except RecursionError:   # Jinja's parser and compiler recurse once per level of brackets
            raise self.fail(f"'{key}' is nested too deeply to compile", line=line) from None
        unbounded = budget.unbounded(tree)
        if unbounded:
            raise self.fail(f"'{key}' cannot stay within the evaluation budget: {unbounded[0]}", line=line)
        # read the tree before compiling it: Jinja's optimizer may fold constants in place
        used = expr.referenced_sources(tree)
        unknown = sorted(name for name in used if not sources.is_known(name))
        if unknown:
            close = difflib.get_close_matches(unknown[0], [s.name for s in sources.SOURCES], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self.fail(f"'{key}' uses unknown source {unknown[0]}{hint}", line=line)
        if powershell:
            unsafe = expr.unsafe_powershell_outputs(tree)
            if unsafe and unsafe[0].startswith("{%"):
                raise self.fail(f"'{key}' uses a {unsafe[0]}, which could change quoted values after ps_quote: every "
                                "value from the environment must reach PowerShell as the quoting filter made it",
                                line=line)
            if unsafe:
                raise self.fail(f"'{key}' interpolates {unsafe[0]} without ps_quote/ps_list/ps_bool/ps_int: every value "
                                "from the environment must be quoted for PowerShell", line=line)
            contexts = expr.unsafe_powershell_contexts(source)
            if contexts:
                raise self.fail(f"'{key}' puts {contexts[0]}, where PowerShell would expand it: use single-quoted "
                                "literals (ps_quote) as whole arguments", line=line)
        self.used_sources |= used
        names = self.names[key] = expr.referenced_names(tree)
        store = compiled_store.store()
        plain = expr.plain_lookup(tree) if template else None
        try:
            if later and store.folder is None:   # what compiling would refuse, checked now: filters and tests exist
                expr.check_names(tree)
                return Compiled(source=source.strip(), compiled=None, is_template=template, tree=tree)
            code = expr.compile_code(tree, source, expression=not template)
        except TemplateSyntaxError as exc:
            raise self.fail(f"'{key}' does not compile: {exc.message}", line=line) from None
        compiled = Compiled(source=source.strip(), compiled=expr.from_code(code, expression=not template),
                            is_template=template, plain=plain)
        _COMPILED[cache_key] = (frozenset(used), names, compiled)
        store.put(cache_key, (frozenset(used), names, plain, code))
        return compiled

    @staticmethod
    def _from_store(cache_key: tuple[str, bool, bool]) -> tuple[frozenset[str], frozenset[str], Compiled] | None:
        """What an earlier run worked out and compiled for this exact text (hma_check.evaluate.compiled_store)."""
        entry = compiled_store.store().get(cache_key)
        if entry is None:
            return None
        used, names, plain, code = entry
        source, template, _ = cache_key
        try:
            run = expr.from_code(code, expression=not template)
        except Exception:  # noqa: BLE001 - code that does not load is compiled again from the text, never a failure
            return None
        compiled = Compiled(source=source.strip(), compiled=run, is_template=template, plain=plain)
        _COMPILED[cache_key] = (used, names, compiled)
        return _COMPILED[cache_key]

    def optional(self, key: str, *, template: bool, powershell: bool = False) -> Compiled | None:
        if key not in self.node or self.node[key] is None:
            return None
        return self.compile(key, self.node[key], template=template, powershell=powershell, later=powershell)

    def requires(self) -> tuple[str, ...]:
        raw = self.schema.texts(self.node.get("requires", []), ("requires",))
        for name in raw:
            if not sources.is_known(name):
                close = difflib.get_close_matches(name, [s.name for s in sources.SOURCES], n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise self.fail(f"'requires' names unknown source {name}{hint}", "requires")
        return tuple(raw)

    def let(self) -> tuple[tuple[str, Compiled], ...]:
        raw = self.node.get("let")
        if raw is None:
            return ()
        self.schema.mapping(raw, ("let",), hint="of names to expressions, evaluated in order")
        out = []
        for name, source in raw.items():
            if not expr.is_identifier(name) or name in RESERVED_NAMES:
                raise self.fail(f"'let' name '{name}' must be an identifier other than {', '.join(sorted(RESERVED_NAMES))}",
                                line=raw.line_of(name))
            out.append((name, self.compile(f"let.{name}", source, template=False, line=raw.line_of(name))))
        return tuple(out)

    def needs(self) -> tuple[str, ...]:
        raw = self.node.get("needs", [])
        if not isinstance(raw, list) or not all(isinstance(n, str) and ID_PATTERN.match(n) for n in raw):
            raise self.fail("'needs' must be a list of step ids", "needs")
        return tuple(raw)

    def references(self) -> list[str]:
        raw = self.schema.texts(self.node.get("references"), ("references",))
        if not raw or not all(r.startswith("https://") for r in raw):
            raise self.fail("'references' must be a non-empty list of https:// links (the Microsoft page that says so)",
                            "references")
        return raw

    def phase(self, required: bool) -> int | None:
        value = self.node.get("phase")
        if value is None and not required:
            return None
        return int(self.schema.one_of(value, ("phase",), tuple(PHASES)))

    def caused_by(self) -> tuple[Cause, ...]:
        raw = self.node.get("caused_by")
        if raw is None:
            return ()
        if not isinstance(raw, YamlList) or not raw:
            raise self.fail("'caused_by' is a list of {check, subject}: the checks whose failure explains this one",
                            "caused_by")
        causes = []
        for index, entry in enumerate(raw):
            line = raw.line_of(index)
            if not isinstance(entry, YamlMap):
                raise self.fail("each 'caused_by' entry is a mapping with 'check' and optionally 'subject'", line=line)
            _keys(self.schema, entry, ("caused_by", index), CAUSE_KEYS)
            if not isinstance(entry["check"], str) or not ID_PATTERN.match(entry["check"]):
                raise self.fail("'caused_by' check must be a check id like HMA-VDIR-001", line=line)
            subject = None
            if entry.get("subject") is not None:
                subject = self.compile("caused_by.subject", entry["subject"], template=True,
                                       line=entry.line_of("subject"), later=True)
            causes.append(Cause(check=entry["check"], subject=subject, line=line))
        return tuple(causes)

    def requires_covers_use(self, requires: tuple[str, ...]) -> None:
        missing = sorted(self.used_sources - set(requires))
        if missing:
            raise self.fail(f"uses {', '.join(missing)} but does not list it in 'requires' (a check must declare "
                            "every source it reads, so the report can say which checks a failed collection left "
                            "unevaluated)", "requires" if "requires" in self.node else None)


def _start(raw: Any, file: str, line: int, kind: str, keys: dict[str, bool], example: str) -> tuple[str, _Builder]:
    """The part checks and steps share (the caller made sure it is a mapping): a well-formed id, known keys."""
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not ID_PATTERN.match(item_id):
        raise ChecksError(f"{kind} id {item_id!r} must look like {example}", path=file, line=raw.line_of("id"))
    builder = _Builder(raw, file, f"{kind} {item_id}")
    _keys(builder.schema, raw, (), keys)
    return item_id, builder


def _load_check(raw: Any, file: str, line: int) -> Check:
    check_id, b = _start(raw, file, line, "check", CHECK_KEYS, "HMA-AREA-001")
    severity = b.schema.one_of(raw["severity"], ("severity",), SEVERITIES)
    area = b.text("area")
    if not re.match(r"^[a-z][a-z0-9-]*$", area or ""):
        raise b.fail("'area' must be a lower-case id like 'virtual-directories'", "area")
    for_each = b.optional("for_each", template=False)
    where = b.optional("where", template=False)
    if where is not None and for_each is None:
        raise b.fail("'where' filters the items of 'for_each'; this check has no 'for_each'", "where")
    on_empty = b.schema.one_of(raw.get("on_empty", "error"), ("on_empty",), ON_EMPTY)
    if "on_empty" in raw and for_each is None:
        raise b.fail("'on_empty' says what an empty 'for_each' means; this check has no 'for_each'", "on_empty")
    enable = b.optional("enable", template=True, powershell=True)
    rollback = b.optional("rollback", template=True, powershell=True)
    if rollback is not None and enable is None:
        raise b.fail("'rollback' without 'enable'", "rollback")
    tags = b.schema.texts(raw.get("tags", []), ("tags",))
    if_skipped = b.schema.one_of(raw.get("if_skipped", "error"), ("if_skipped",), IF_SKIPPED)
    requires = b.requires()
    check = Check(
        id=check_id, title=b.text("title") or "", area=area or "", severity=severity, expect=b.text("expect") or "",
        why=b.text("why") or "", references=b.references(), requires=requires,
        when=b.optional("when", template=False), for_each=for_each, where=where, on_empty=on_empty,
        subject=b.optional("subject", template=True), let=b.let(),
        assertion=b.compile("assert", raw["assert"], template=False),
        actual=b.compile("actual", raw["actual"], template=True),
        enable=enable, rollback=rollback, phase=b.phase(required=enable is not None), tags=tuple(tags),
        caused_by=b.caused_by(), if_skipped=if_skipped, affected=b.optional("affected", template=False),
        file=file, line=line, raw=dict(raw),
    )
    if severity == "blocker" and check.phase is not None and check.phase >= SWITCH:
        raise b.fail(f"'phase' of a blocker's fix must come before the switch (phase {SWITCH}): the switch and later "
                     "phases wait until no blocker fails", "phase")
    b.requires_covers_use(requires)
    check.let_names = {name: b.names[f"let.{name}"] for name, _ in check.let}
    check.assert_names = b.names["assert"]
    if where is not None:
        check.where_names = b.names["where"]
    return check


def _load_step(raw: Any, file: str, line: int) -> Step:
    step_id, b = _start(raw, file, line, "step", STEP_KEYS, "HMA-STEP-001")
    requires = b.requires()
    step = Step(
        id=step_id, title=b.text("title") or "", phase=b.phase(required=True) or 2,
        enable=b.compile("enable", raw["enable"], template=True, powershell=True), why=b.text("why") or "",
        references=b.references(), requires=requires, when=b.optional("when", template=False),
        done=b.optional("done", template=False), rollback=b.optional("rollback", template=True, powershell=True),
        subject=b.optional("subject", template=True), let=b.let(), needs=b.needs(), file=file, line=line,
        raw=dict(raw), needs_line=raw.line_of("needs") if "needs" in raw else line,
    )
    b.requires_covers_use(requires)
    return step


__all__ = ["Cause", "Check", "Step", "CheckSet", "Compiled", "load_checks", "PHASES"]
