"""The evidence snapshot (evidence.json): every collected source with status, command, timing, error and data."""

from __future__ import annotations

import getpass
import json
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from hma_check import __version__
from hma_check.util.atomic import write_bytes_atomic
from hma_check.util.heap import collector_paused
from hma_check.errors import EvidenceError
from hma_check.util.json_file import JsonError, loads_json
from hma_check.util.read_file import read_limited

SCHEMA_VERSION = 1
STATUSES = ("ok", "error", "skipped")
# Far above a 50,000-user tenant (about 10 MB); a larger file is refused before it is parsed.
MAX_EVIDENCE_BYTES = 512 * 1024 * 1024


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z, the one date format of evidence.json."""
    moment = moment.astimezone(timezone.utc)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def source_key(name: str, scope: str | None) -> str:
    """``name`` for an organisation-wide source, ``name@scope`` for one collected per server, tenant or host."""
    return f"{name}@{scope}" if scope else name


@dataclass
class SourceResult:
    """One query and what came back. ``data`` keeps vendor property names verbatim; it is JSON-compatible."""

    name: str
    status: str
    command: str
    started: str
    duration_ms: int
    scope: str | None = None
    error: str | None = None
    data: Any = None

    @property
    def key(self) -> str:
        return source_key(self.name, self.scope)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.scope is not None:
            out["scope"] = self.scope
        out.update(status=self.status, command=self.command, started=self.started, duration_ms=self.duration_ms,
                   error=self.error, data=self.data)
        return out

    @classmethod
    def ok_result(cls, name: str, data: Any, *, command: str, scope: str | None = None,
                  started: str | None = None, duration_ms: int = 0) -> "SourceResult":
        return cls(name=name, scope=scope, status="ok", command=command, started=started or iso_utc(utc_now()),
                   duration_ms=duration_ms, data=data)

    @classmethod
    def error_result(cls, name: str, error: str, *, command: str, scope: str | None = None,
                     started: str | None = None, duration_ms: int = 0) -> "SourceResult":
        return cls(name=name, scope=scope, status="error", command=command, started=started or iso_utc(utc_now()),
                   duration_ms=duration_ms, error=error or "unknown error")

    @classmethod
    def skipped_result(cls, name: str, reason: str, *, command: str = "", scope: str | None = None) -> "SourceResult":
        return cls(name=name, scope=scope, status="skipped", command=command, started=iso_utc(utc_now()),
                   duration_ms=0, error=reason)


@dataclass
class Snapshot:
    """Everything one run collected. Evaluation only ever reads the saved form, so a re-run reproduces it exactly."""

    collected_at: str
    sources: dict[str, SourceResult] = field(default_factory=dict)
    tool_version: str = __version__
    collected_by: dict[str, str] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def new(cls, target: dict[str, Any] | None = None) -> "Snapshot":
        return cls(collected_at=iso_utc(utc_now()), collected_by=who_ran_it(), target=dict(target or {}))

    def add(self, result: SourceResult) -> None:
        self.sources[result.key] = result

    def collected_anything(self) -> bool:
        """Whether any source holds evidence. scan.* sources record what the scan asked for, not what it found."""
        return any(result.ok for result in self.sources.values() if not result.name.startswith("scan."))

    def results(self, name: str) -> list[SourceResult]:
        """Every result for a source name: one for an organisation-wide source, one per scope otherwise."""
        return [r for r in self.sources.values() if r.name == name]

    @property
    def collected_at_datetime(self) -> datetime:
        return parse_utc(self.collected_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "tool_version": self.tool_version,
            "collected_at": self.collected_at,
            "collected_by": self.collected_by,
            "target": self.target,
            "sources": {key: result.to_json() for key, result in self.sources.items()},
        }

    def dumps(self) -> bytes:
        """One source per line: readable and diff-friendly, and fast (indent= forces json's slow pure-Python
        encoder, which took seconds for a 50,000-user tenant; json_lines writes with orjson)."""
        document = self.to_json()
        sources = document.pop("sources")
        return json_lines(document, "sources", sources)

    def save(self, path: str | Path) -> bytes:
        payload = self.dumps()
        write_bytes_atomic(Path(path), payload)
        return payload


def dump_json(value: Any) -> bytes:
    """Compact JSON in UTF-8, as evidence.json and findings.json hold it, written by orjson: a seventh of json's time
    for the 8.7 MB of findings of 200 servers and 50,000 users, and for a 50,000-user tenant's evidence
    (benchmarks/README.md). What orjson does not write (an integer beyond 64 bits, as evidence may hold; nesting
    deeper than 254 levels; a key that is not text) json writes in the same compact form, and what json refuses
    (a datetime, a dataclass, any object that is not JSON) is refused as before. One difference: orjson writes NaN
    and the infinities as null where json refused them. None reaches here: CLIXML keeps .NET's text for them, every
    JSON reader of hma-check refuses them, and findings hold evidence values and text."""
    import orjson      # here, not at the top: `hma-check --help` imports this module and writes no JSON

    # orjson writes datetimes and dataclasses itself; json refuses them, and a collector that hands one over has a
    # bug that should show rather than land in evidence.json: passed to _not_json, then to json, which raises
    as_json_would = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
    try:
        return orjson.dumps(value, default=_not_json, option=as_json_would)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_lines(header: dict[str, Any], key: str, entries: dict[str, Any] | list[Any]) -> bytes:
    """A JSON object whose ``key`` holds one entry per line; everything else on its own line before it.

    Built from pieces joined once: a 50,000-user source is one 9 MB piece, copied once rather than once per
    concatenation around it."""
    dump = dump_json
    parts = [b"{\n"]
    for name, value in header.items():
        parts += [b" ", dump(name), b": ", dump(value), b",\n"]
    is_object = isinstance(entries, dict)
    parts += [b" ", dump(key), b": ", b"{" if is_object else b"["]
    pairs: Iterable[tuple[Any, Any]] = entries.items() if isinstance(entries, dict) else enumerate(entries)
    for index, (name, value) in enumerate(pairs):
        parts.append(b",\n  " if index else b"\n  ")
        if is_object:
            parts += [dump(name), b": "]
        parts.append(dump(value))
    if entries:
        parts.append(b"\n ")
    parts += [b"}" if is_object else b"]", b"\n}\n"]
    return b"".join(parts)


@contextmanager
def timed(name: str, command: str, *, scope: str | None = None) -> Iterator[dict[str, Any]]:
    """Measure a query: ``with timed(...) as t: t["data"] = ...``; then ``t["result"]`` holds the SourceResult.

    An exception inside the block becomes an error result (its message, never a traceback), so one failed query
    never loses the rest of a scan.
    """
    box: dict[str, Any] = {}
    started = utc_now()
    t0 = time.perf_counter()
    try:
        yield box
    except Exception as exc:  # noqa: BLE001 - a collector failure is data, not a crash
        box["result"] = SourceResult.error_result(name, f"{type(exc).__name__}: {exc}", command=command, scope=scope,
                                                  started=iso_utc(started),
                                                  duration_ms=int((time.perf_counter() - t0) * 1000))
    else:
        box["result"] = SourceResult.ok_result(name, box.get("data"), command=command, scope=scope,
                                               started=iso_utc(started),
                                               duration_ms=int((time.perf_counter() - t0) * 1000))


def who_ran_it() -> dict[str, str]:
    """User and host only: never anything that could be a credential."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "unknown"
    return {"user": user, "host": socket.gethostname()}


def parse_utc(text: str) -> datetime:
    """An ISO 8601 date or time in UTC (no offset means UTC); ValueError when it is none, or falls outside year 1 to
    9999 once converted (0001-01-01T00:00:00+01:00 is in year 0)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{text[:40]!r} is outside year 1 to 9999 in UTC") from None


# --------------------------------------------------------------------------------------------------------- loading

def load_snapshot(path: str | Path) -> Snapshot:
    """Read and validate evidence.json; anything malformed, truncated, hostile or too new is one EvidenceError."""
    return read_snapshot(path)[1]


def read_snapshot(path: str | Path) -> tuple[bytes, Snapshot]:
    """The exact bytes read and the Snapshot parsed from them, so what is hashed and copied is what was evaluated."""
    raw = read_limited(path, MAX_EVIDENCE_BYTES, error=EvidenceError, what="evidence file")
    return raw, loads_snapshot(raw, source=str(path))


def loads_snapshot(raw: bytes, *, source: str = "evidence.json") -> Snapshot:
    with collector_paused():    # a million containers, none of them garbage: a collection on the way frees nothing
        return _loads_snapshot(raw, source)


def _loads_snapshot(raw: bytes, source: str) -> Snapshot:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvidenceError(f"not UTF-8 text (byte {exc.start})", path=source) from None
    try:
        doc = loads_json(text)
    except JsonError as exc:
        # A file cut short (disk full, interrupted copy) no longer ends with its closing brace.
        hint = " (the file looks truncated)" if not text.rstrip().endswith("}") else ""
        raise EvidenceError(f"{exc.message}{hint}", path=source, line=exc.line) from None
    except RecursionError:
        raise EvidenceError("JSON nested too deeply to be evidence", path=source) from None
    return _snapshot_from_json(doc, source)


def _snapshot_from_json(doc: Any, source: str) -> Snapshot:
    def fail(message: str) -> EvidenceError:
        return EvidenceError(message, path=source)

    if not isinstance(doc, dict):
        raise fail("evidence must be a JSON object")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise fail("missing or invalid schema_version: this is not an hma-check evidence file")
    if version > SCHEMA_VERSION:
        raise fail(f"written with evidence schema {version} by a newer hma-check "
                   f"({_short(doc.get('tool_version'))}); this version reads schema {SCHEMA_VERSION}: upgrade hma-check")
    if version < 1:
        raise fail(f"unknown evidence schema {version}")
    for key in ("tool_version", "collected_at"):
        if not isinstance(doc.get(key), str):
            raise fail(f"missing or invalid {key}")
    try:
        parse_utc(doc["collected_at"])
    except ValueError as exc:
        if "outside year" in str(exc):
            raise fail(f"collected_at {exc}") from None
        raise fail(f"collected_at is not an ISO 8601 date: {_short(doc['collected_at'])}") from None
    collected_by = doc.get("collected_by", {})
    target = doc.get("target", {})
    if not isinstance(collected_by, dict) or not all(isinstance(v, str) for v in collected_by.values()):
        raise fail("collected_by must be an object of strings")
    if not isinstance(target, dict):
        raise fail("target must be an object")
    raw_sources = doc.get("sources")
    if not isinstance(raw_sources, dict):
        raise fail("missing or invalid sources")
    sources: dict[str, SourceResult] = {}
    for key, entry in raw_sources.items():
        result = _source_from_json(key, entry, fail)
        sources[key] = result
    return Snapshot(schema_version=version, tool_version=doc["tool_version"], collected_at=doc["collected_at"],
                    collected_by=dict(collected_by), target=dict(target), sources=sources)


def _source_from_json(key: str, entry: Any, fail: Any) -> SourceResult:
    where = f"source {_short(key)}"
    if not isinstance(entry, dict):
        raise fail(f"{where}: must be an object")
    name, scope = entry.get("name"), entry.get("scope")
    if not isinstance(name, str) or not name:
        raise fail(f"{where}: missing name")
    if scope is not None and (not isinstance(scope, str) or not scope):
        raise fail(f"{where}: scope must be a non-empty string")
    if source_key(name, scope) != key:
        raise fail(f"{where}: key does not match its name and scope ({_short(source_key(name, scope))})")
    status = entry.get("status")
    if status not in STATUSES:
        raise fail(f"{where}: status must be one of {', '.join(STATUSES)}")
    command, started, duration = entry.get("command"), entry.get("started"), entry.get("duration_ms")
    if not isinstance(command, str):
        raise fail(f"{where}: missing command")
    if not isinstance(started, str):
        raise fail(f"{where}: missing started")
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 0:
        raise fail(f"{where}: duration_ms must be a non-negative integer")
    error = entry.get("error")
    if error is not None and not isinstance(error, str):
        raise fail(f"{where}: error must be a string")
    if status != "ok" and not error:
        raise fail(f"{where}: status {status} needs an error text saying why")
    if status == "ok" and "data" not in entry:
        raise fail(f"{where}: status ok but no data")
    data = entry.get("data")
    return SourceResult(name=name, scope=scope, status=status, command=command, started=started,
                        duration_ms=duration, error=error, data=data)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"
