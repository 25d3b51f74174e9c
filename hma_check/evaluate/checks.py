"""Load checks files: validate every field in code and compile every expression once, or fail with file, line, id.

A checks file is YAML:

    version: 1
    areas: {topology: Topology and versions, ...}        # optional: report section titles, in order
    checks: [ {id, title, area, severity, requires, when, for_each, where, on_empty, subject, let,
               assert, expect, actual, why, references, enable, rollback, phase}, ... ]
    steps:  [ {id, title, phase, requires, when, done, enable, rollback, why, references}, ... ]   # optional

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
from pathlib import Path
from typing import Any, Callable

from jinja2 import TemplateSyntaxError

from hma_check.evaluate import expr
from hma_check.contract import sources
from hma_check.errors import ChecksError
from hma_check.contract.findings import SEVERITIES
from hma_check.util.yaml_file import YamlList, YamlMap, loads_yaml_bytes, read_yaml_bytes

ID_PATTERN = re.compile(r"^[A-Z][A-Z0-9]+(-[A-Z0-9]+)*-\d{3,}$")
PHASES = {1: "Prepare: no client impact", 2: "Switch: clients move to modern authentication",
          3: "Validate and harden"}
ON_EMPTY = ("error", "not_applicable", "fail")
IF_SKIPPED = ("error", "not_applicable")
RESERVED_NAMES = frozenset({"item", "scope", "now", "loop", *sources.NAMESPACES})

CHECK_KEYS = {
    "id": True, "title": True, "area": True, "severity": True, "assert": True, "expect": True, "actual": True,
    "why": True, "references": True,
    "requires": False, "when": False, "for_each": False, "where": False, "on_empty": False, "subject": False,
    "let": False, "enable": False, "rollback": False, "phase": False, "tags": False, "if_skipped": False,
    "affected": False,
}
STEP_KEYS = {
    "id": True, "title": True, "phase": True, "enable": True, "why": True, "references": True,
    "requires": False, "when": False, "done": False, "rollback": False, "subject": False, "let": False,
}
TOP_KEYS = {"version": True, "checks": True, "areas": False, "steps": False}


@dataclass
class Compiled:
    """A compiled expression or template with its source text, kept for messages."""

    source: str
    run: Callable[..., Any]
    is_template: bool

    def __call__(self, context: dict[str, Any]) -> Any:
        if self.is_template:
            return self.run.render(context)  # type: ignore[attr-defined]
        return self.run(**context)


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
    if_skipped: str = "error"             # a required source skipped on purpose: ERROR, or NOT_APPLICABLE
    affected: Compiled | None = None      # the users a non-PASS finding affects (one action-plan row each)
    item_properties: frozenset[str] = frozenset()
    file: str = ""
    line: int = 0
    raw: dict[str, Any] = field(default_factory=dict)   # the YAML as written, for `checks explain`


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
    file: str = ""
    line: int = 0
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckSet:
    checks: list[Check] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    areas: dict[str, str] = field(default_factory=dict)
    files: list[dict[str, str]] = field(default_factory=list)   # [{path, sha256}]

    def by_id(self, check_id: str) -> Check | Step | None:
        for item in [*self.checks, *self.steps]:
            if item.id == check_id:
                return item
        return None

    def area_title(self, area: str) -> str:
        return self.areas.get(area) or area.replace("-", " ").capitalize()


def load_checks(paths: list[str | Path]) -> CheckSet:
    """Load and validate every file; the union must have unique ids."""
    result = CheckSet()
    seen: dict[str, str] = {}
    for path in paths:
        file = str(Path(path))
        raw = read_yaml_bytes(file, error=ChecksError)   # read once: the hash recorded is of the bytes evaluated
        _load_document(loads_yaml_bytes(raw, source=file, error=ChecksError), file, result, seen)
        result.files.append({"path": file, "sha256": hashlib.sha256(raw).hexdigest()})
    return result


def _load_document(document: Any, file: str, into: CheckSet, seen: dict[str, str]) -> None:
    if not isinstance(document, YamlMap):
        raise ChecksError("a checks file is a mapping with 'version' and 'checks'", path=file, line=1)
    _check_keys(document, TOP_KEYS, file, where="checks file")
    if document["version"] != 1:
        raise ChecksError(f"unsupported checks file version {document['version']!r} (this hma-check reads 1)",
                          path=file, line=document.line_of("version"))
    areas = document.get("areas")
    if areas is not None:
        if not isinstance(areas, YamlMap) or not all(isinstance(v, str) for v in areas.values()):
            raise ChecksError("'areas' maps area ids to titles", path=file, line=document.line_of("areas"))
        for area, title in areas.items():
            into.areas.setdefault(area, title)
    for key, load, loaded in (("checks", _load_check, into.checks), ("steps", _load_step, into.steps)):
        items = document.get(key, YamlList())   # 'checks' is required: _check_keys made sure it is there
        if not isinstance(items, YamlList):
            raise ChecksError(f"'{key}' must be a list", path=file, line=document.line_of(key))
        for index, raw in enumerate(items):
            item = load(raw, file, items.line_of(index))
            if item.id in seen:
                raise ChecksError(f"check {item.id}: duplicate id (first defined at {seen[item.id]})", path=file,
                                  line=item.line)
            seen[item.id] = f"{file}:{item.line}"
            loaded.append(item)


def _check_keys(node: YamlMap, allowed: dict[str, bool], file: str, where: str) -> None:
    for key in node:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ChecksError(f"{where}: unknown key '{key}'{hint}", path=file, line=node.line_of(key))
    for key, required in allowed.items():
        if required and key not in node:
            raise ChecksError(f"{where}: missing required key '{key}'", path=file, line=node.line)


class _Builder:
    """Compiles the fields of one check or step, with errors that name file, line and id."""

    def __init__(self, node: YamlMap, file: str, what: str) -> None:
        self.node, self.file, self.what = node, file, what
        self.used_sources: set[str] = set()
        self.item_properties: set[str] = set()

    def fail(self, message: str, key: str | None = None, line: int | None = None) -> ChecksError:
        return ChecksError(f"{self.what}: {message}", path=self.file,
                           line=line if line is not None else self.node.line_of(key) if key else self.node.line)

    def text(self, key: str, *, required: bool = True) -> str | None:
        value = self.node.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            hint = " (quote it: YAML reads on, off, yes and no as booleans)" if isinstance(value, bool) else ""
            raise self.fail(f"'{key}' must be non-empty text{hint}", key)
        return value.strip()

    def compile(self, key: str, source: Any, *, template: bool, line: int | None = None,
                powershell: bool = False) -> Compiled:
        line = line if line is not None else self.node.line_of(key)
        if not isinstance(source, str) or not source.strip():
            raise self.fail(f"'{key}' must be a non-empty {'template' if template else 'expression'}", line=line)
        try:
            tree = expr.parse(source, expression=not template)
            run = expr.compile_template(source) if template else expr.compile_expression(source)
        except TemplateSyntaxError as exc:
            raise self.fail(f"'{key}' does not compile: {exc.message}", line=line) from None
        used = expr.referenced_sources(tree)
        unknown = sorted(name for name in used if not sources.is_known(name))
        if unknown:
            close = difflib.get_close_matches(unknown[0], [s.name for s in sources.SOURCES], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self.fail(f"'{key}' uses unknown source {unknown[0]}{hint}", line=line)
        if powershell:
            unsafe = expr.unsafe_powershell_outputs(tree)
            if unsafe:
                raise self.fail(f"'{key}' interpolates {unsafe[0]} without ps_quote/ps_list/ps_bool/ps_int: every value "
                                "from the environment must be quoted for PowerShell", line=line)
        self.used_sources |= used
        self.item_properties |= expr.referenced_item_properties(tree)
        return Compiled(source=source.strip(), run=run, is_template=template)

    def optional(self, key: str, *, template: bool, powershell: bool = False) -> Compiled | None:
        if key not in self.node or self.node[key] is None:
            return None
        return self.compile(key, self.node[key], template=template, powershell=powershell)

    def requires(self) -> tuple[str, ...]:
        raw = self.node.get("requires", [])
        if not isinstance(raw, list) or not all(isinstance(r, str) for r in raw):
            raise self.fail("'requires' must be a list of source names", "requires")
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
        if not isinstance(raw, YamlMap):
            raise self.fail("'let' maps names to expressions, evaluated in order", "let")
        out = []
        for name, source in raw.items():
            if not expr.is_identifier(name) or name in RESERVED_NAMES:
                raise self.fail(f"'let' name '{name}' must be an identifier other than {', '.join(sorted(RESERVED_NAMES))}",
                                line=raw.line_of(name))
            out.append((name, self.compile(f"let.{name}", source, template=False, line=raw.line_of(name))))
        return tuple(out)

    def references(self) -> list[str]:
        raw = self.node.get("references")
        if not isinstance(raw, list) or not raw or not all(isinstance(r, str) and r.startswith("https://") for r in raw):
            raise self.fail("'references' must be a non-empty list of https:// links (the Microsoft page that says so)",
                            "references")
        return [str(r) for r in raw]

    def phase(self, required: bool) -> int | None:
        value = self.node.get("phase")
        if value is None and not required:
            return None
        if value not in PHASES:
            raise self.fail(f"'phase' must be one of {', '.join(map(str, PHASES))}", "phase")
        return int(value)

    def requires_covers_use(self, requires: tuple[str, ...]) -> None:
        missing = sorted(self.used_sources - set(requires))
        if missing:
            raise self.fail(f"uses {', '.join(missing)} but does not list it in 'requires' (a check must declare "
                            "every source it reads, so the report can say which checks a failed collection left "
                            "unevaluated)", "requires" if "requires" in self.node else None)


def _start(raw: Any, file: str, line: int, kind: str, keys: dict[str, bool], example: str) -> tuple[str, _Builder]:
    """The part checks and steps share: a mapping, a well-formed id, known keys."""
    if not isinstance(raw, YamlMap):
        raise ChecksError(f"each {kind} is a mapping", path=file, line=line)
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not ID_PATTERN.match(item_id):
        raise ChecksError(f"{kind} id {item_id!r} must look like {example}", path=file, line=raw.line_of("id"))
    _check_keys(raw, keys, file, f"{kind} {item_id}")
    return item_id, _Builder(raw, file, f"{kind} {item_id}")


def _load_check(raw: Any, file: str, line: int) -> Check:
    check_id, b = _start(raw, file, line, "check", CHECK_KEYS, "HMA-AREA-001")
    severity = raw["severity"]
    if severity not in SEVERITIES:
        raise b.fail(f"'severity' must be one of {', '.join(SEVERITIES)}", "severity")
    area = b.text("area")
    if not re.match(r"^[a-z][a-z0-9-]*$", area or ""):
        raise b.fail("'area' must be a lower-case id like 'virtual-directories'", "area")
    for_each = b.optional("for_each", template=False)
    where = b.optional("where", template=False)
    if where is not None and for_each is None:
        raise b.fail("'where' filters the items of 'for_each'; this check has no 'for_each'", "where")
    on_empty = raw.get("on_empty", "error")
    if on_empty not in ON_EMPTY or ("on_empty" in raw and for_each is None):
        raise b.fail(f"'on_empty' (only with for_each) must be one of {', '.join(ON_EMPTY)}", "on_empty")
    enable = b.optional("enable", template=True, powershell=True)
    rollback = b.optional("rollback", template=True, powershell=True)
    if rollback is not None and enable is None:
        raise b.fail("'rollback' without 'enable'", "rollback")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise b.fail("'tags' must be a list of strings", "tags")
    if_skipped = raw.get("if_skipped", "error")
    if if_skipped not in IF_SKIPPED:
        raise b.fail(f"'if_skipped' must be one of {', '.join(IF_SKIPPED)}", "if_skipped")
    requires = b.requires()
    check = Check(
        id=check_id, title=b.text("title") or "", area=area or "", severity=severity, expect=b.text("expect") or "",
        why=b.text("why") or "", references=b.references(), requires=requires,
        when=b.optional("when", template=False), for_each=for_each, where=where, on_empty=on_empty,
        subject=b.optional("subject", template=True), let=b.let(),
        assertion=b.compile("assert", raw["assert"], template=False),
        actual=b.compile("actual", raw["actual"], template=True),
        enable=enable, rollback=rollback, phase=b.phase(required=enable is not None), tags=tuple(tags),
        if_skipped=if_skipped, affected=b.optional("affected", template=False), file=file, line=line, raw=dict(raw),
    )
    b.requires_covers_use(requires)
    check.item_properties = frozenset(b.item_properties)
    return check


def _load_step(raw: Any, file: str, line: int) -> Step:
    step_id, b = _start(raw, file, line, "step", STEP_KEYS, "HMA-STEP-001")
    requires = b.requires()
    step = Step(
        id=step_id, title=b.text("title") or "", phase=b.phase(required=True) or 2,
        enable=b.compile("enable", raw["enable"], template=True, powershell=True), why=b.text("why") or "",
        references=b.references(), requires=requires, when=b.optional("when", template=False),
        done=b.optional("done", template=False), rollback=b.optional("rollback", template=True, powershell=True),
        subject=b.optional("subject", template=True), let=b.let(), file=file, line=line, raw=dict(raw),
    )
    b.requires_covers_use(requires)
    return step


__all__ = ["Check", "Step", "CheckSet", "Compiled", "load_checks", "PHASES"]
