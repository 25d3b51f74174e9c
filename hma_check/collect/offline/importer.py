"""Offline import: a folder or zip of Export-Clixml files and Graph JSON becomes the same Snapshot a live scan makes."""

from __future__ import annotations

import functools
import os
import stat
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterator

from hma_check.collect.clixml import MAX_CLIXML_BYTES, ClixmlObject, decode_text, parse_clixml
from hma_check.collect.exchange.objects import (FIELDS, SERVER_PROPERTY_SOURCES, ShapeError, shape,
                                                source_for)
from hma_check.collect.logs.httpproxy import (ClientLogs, LogFormatError, Prefixed, looks_like_httpproxy,
                                              other_exchange_log)
from hma_check.collect.options import ScanOptions, options_result
from hma_check.errors import ClixmlError, InputError
from hma_check.contract.snapshot import Snapshot, SourceResult, parse_utc, source_key, who_ran_it
from hma_check.util.json_file import loads_json
from hma_check.contract.sources import BY_NAME, SOURCES

# Bounds for what one import reads; a customer's collection is a few hundred files and well under 1 GB.
MAX_FILES = 5000
MAX_TOTAL_BYTES = 1024 * 1024 * 1024   # counted as inflated or read, never taken from a header or stat()
# CLIXML compresses about 10:1; a member inflating more than 200 times its compressed size is treated as a zip bomb.
# Checked on the bytes as they inflate, for every member: a small one may reach RATIO_FLOOR whatever its ratio.
MAX_COMPRESSION_RATIO = 200
RATIO_FLOOR = 16 * 1024
# Values kept from every file together (objects are cut to the contract's properties as each file is read): a
# 50,000-mailbox organisation keeps well under a million.
MAX_KEPT_VALUES = 2_000_000
# HttpProxy logs are streamed, never held: their own budget (a week of a busy organisation's logs, gzip'd by the
# collection script, is a few GB).
MAX_LOG_BYTES = 64 * 1024 ** 3
SNIFF_BYTES = 64 * 1024
LOGS_SOURCE = "logs.httpproxy"
MANIFEST_KEY = "hmaCheckManifest"
GRAPH_KEY = "hmaCheckGraph"
NOT_SUPPLIED = "no file in the import supplied it"


class ImportPathError(InputError):
    """The import path itself cannot be read (missing, not a folder or zip, a broken zip)."""


@dataclass
class _Capture:
    """The recognised objects of one source (and server) from one file."""

    file: str
    source: str
    scope: str | None
    objects: list[ClixmlObject]
    entry: dict[str, Any] = field(default_factory=dict)


# Beyond the contract's properties, what shaping and placing an object reads (exchange.objects.shape, _place).
_ALSO_KEPT = ("Server", "InStore", "FileName", "RawData")


@dataclass
class _Parsed:
    """One CLIXML file as the import keeps it: the objects hma-check reads, by source and cut to the properties the
    contract and the placement need; of the rest only a count and their first type names. The file's full parse is
    dropped as soon as this is made, so memory follows what is kept, not what was read."""

    name: str
    by_source: dict[str, list[ClixmlObject]]
    unknown: int
    kinds: list[str]
    values: int

    @classmethod
    def of(cls, name: str, objects: list[ClixmlObject]) -> "_Parsed":
        by_source: dict[str, list[ClixmlObject]] = defaultdict(list)
        unknown, values = 0, 0
        kinds: set[str] = set()
        for obj in objects:
            source = source_for(obj)
            if source is None:
                unknown += 1
                if obj.type_names and len(kinds) < 3:
                    kinds.add(obj.type_names[0])
                continue
            wanted = {field.casefold() for field in (*FIELDS.get(source, ()), *_ALSO_KEPT)}
            kept = {key: value for key, value in obj.properties.items() if key.casefold() in wanted}
            values += 1 + _values(kept)
            by_source[source].append(ClixmlObject(obj.type_names[:1], obj.to_string, kept, obj.computer_name))
        return cls(name, dict(by_source), unknown, sorted(kinds), values)


def _values(document: Any) -> int:
    """About one per value, and one per 64 characters of text: what a document costs to keep."""
    count, stack = 0, [document]
    while stack:
        value = stack.pop()
        count += 1
        if isinstance(value, str):
            count += len(value) >> 6
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


@dataclass
class ImportOutcome:
    snapshot: Snapshot
    recognised: list[dict[str, Any]] = field(default_factory=list)
    unrecognised: list[dict[str, str]] = field(default_factory=list)
    malformed: list[dict[str, str]] = field(default_factory=list)
    unplaced: list[dict[str, str]] = field(default_factory=list)   # read, but no server could be told for them


def import_path(path: str | Path, options: ScanOptions | None = None, *,
                pseudonymise_users: bool = False) -> ImportOutcome:
    """Read every file under ``path`` (a folder or a .zip) and build the Snapshot.

    Files are recognised by what they hold (object type names, or the collection script's JSON markers), never by
    their names. A file hma-check does not read is listed and skipped; a malformed one is listed with its reason;
    neither stops the import. Every contract source no file supplied is recorded as skipped, so a check needing it is
    ERROR, never PASS. ``options`` (the optional areas asked for) is recorded as scan.options, as a scan does.
    Exchange HttpProxy logs (plain or gzip) are streamed into logs.httpproxy; ``pseudonymise_users`` replaces the
    user names there with a keyed hash whose key is never stored.
    """
    path = Path(path)
    importer = _Importer(str(path), options or ScanOptions(), pseudonymise_users=pseudonymise_users)
    for member in _members(path, importer):
        importer.add_member(member)
        if importer.stopped:
            break
    return importer.finish()


# ------------------------------------------------------------------------------------------------- file access

@dataclass
class _Member:
    """One file of the import, not read yet: its name, its size as stated (stat, or the zip header: a header can lie,
    so what is read is bounded as it is read), its compressed size and an opener."""

    name: str
    size: int
    compressed: int
    open: Callable[[], IO[bytes]]
    zipped: bool = False


def _members(path: Path, importer: "_Importer") -> Iterator[_Member]:
    # os.path: a name too long to exist is "no such file", not an exception.
    if os.path.isdir(path):
        yield from _folder_members(path, importer)
    elif os.path.isfile(path) and zipfile.is_zipfile(path):
        yield from _zip_members(path, importer)
    elif os.path.lexists(path):
        raise ImportPathError("not a folder or a zip file", path=str(path))
    else:
        raise ImportPathError("no such file or folder", path=str(path))


def _folder_members(root: Path, importer: "_Importer") -> Iterator[_Member]:
    files = sorted(p for p in root.rglob("*") if not p.is_dir())
    for count, file in enumerate(files):
        name = file.relative_to(root).as_posix()
        if count >= MAX_FILES:
            importer.malformed_file(name, f"more than {MAX_FILES} files in the import; the rest were not read")
            return
        info = file.lstat()
        if not stat.S_ISREG(info.st_mode):
            importer.skip(name, "not a regular file (a link or a device)")
            continue
        yield _Member(name, info.st_size, info.st_size, _file_opener(file))


def _file_opener(file: Path) -> Callable[[], IO[bytes]]:
    def opened() -> IO[bytes]:
        return file.open("rb")
    return opened


def _zip_members(archive: Path, importer: "_Importer") -> Iterator[_Member]:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            for count, info in enumerate(infos):
                name = info.filename
                if count >= MAX_FILES:
                    importer.malformed_file(name, f"more than {MAX_FILES} members in the zip; the rest were not read")
                    return
                problem = _unsafe_member(info)
                if problem:
                    importer.malformed_file(name, problem)
                    continue
                yield _Member(name, info.file_size, info.compress_size, functools.partial(zf.open, info), zipped=True)
    except (zipfile.BadZipFile, NotImplementedError) as exc:   # NotImplementedError: "zip file version 11.9"
        raise ImportPathError(f"not a readable zip file: {exc}", path=str(archive)) from None


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        return "unsafe member name (absolute or climbing out of the archive); not read"
    if info.flag_bits & 0x1:
        return "encrypted member; not read"
    if info.file_size > max(RATIO_FLOOR, MAX_COMPRESSION_RATIO * info.compress_size):
        return (f"compression ratio above {MAX_COMPRESSION_RATIO}:1 ({info.compress_size} -> {info.file_size} "
                f"bytes): refused as a zip bomb")
    return None


# ------------------------------------------------------------------------------------------------- the importer

class _Importer:
    def __init__(self, origin: str, options: ScanOptions, *, pseudonymise_users: bool = False) -> None:
        self.origin = origin
        self.options = options
        self.pseudonymise_users = pseudonymise_users
        self.logs = ClientLogs()
        self.log_files: list[str] = []
        self.log_bytes = 0
        self.clixml_bytes = 0
        self.unreadable_logs: list[tuple[str, str]] = []
        self.recognised: list[dict[str, Any]] = []
        self.unrecognised: list[dict[str, str]] = []
        self.unplaced: list[dict[str, str]] = []
        self.malformed: list[dict[str, str]] = []
        self.manifests: list[tuple[str, dict[str, Any]]] = []
        self.clixml_files: list[_Parsed] = []
        self.graph: list[tuple[str, dict[str, Any]]] = []
        self.broken: dict[str, str] = {}
        self.seen: set[str] = set()
        self.kept = 0          # values kept from every file so far (MAX_KEPT_VALUES)
        self.stopped = False   # a limit of the whole import was reached: no further file is read

    @property
    def full(self) -> bool:
        return self.kept > MAX_KEPT_VALUES

    def skip(self, name: str, reason: str) -> None:
        self.unrecognised.append({"file": name, "reason": reason})

    def malformed_file(self, name: str, reason: str) -> None:
        self.malformed.append({"file": name, "reason": reason})
        self.broken[name] = reason

    def add_member(self, member: _Member) -> None:
        """Sniff the first bytes: an HttpProxy log is streamed into logs.httpproxy, anything else is read whole,
        never more than its limit: one file's, what is left of the import's, and for a zip member its compression
        ratio's (the header's sizes can lie: what is inflated is counted)."""
        if self.stopped:
            return
        if self.full:
            self.stop(member.name, f"the import exceeds {MAX_KEPT_VALUES} values; the rest were not read")
            return
        limit = min(MAX_CLIXML_BYTES, MAX_TOTAL_BYTES - self.clixml_bytes)
        if member.zipped:
            limit = min(limit, max(RATIO_FLOOR, MAX_COMPRESSION_RATIO * member.compressed))
        try:
            with member.open() as handle:
                head = handle.read(SNIFF_BYTES)
                if looks_like_httpproxy(head):
                    self._add_log(member, Prefixed(head, handle))
                    return
                kind = other_exchange_log(head)
                if kind is not None:
                    self.skip(member.name, f"an Exchange log hma-check does not read ({kind})")
                    return
                payload = head + handle.read(max(0, limit + 1 - len(head)))
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError, zlib.error) as exc:
            self.malformed_file(member.name, f"cannot be read: {exc}")
            return
        if len(payload) > limit:
            if limit == MAX_TOTAL_BYTES - self.clixml_bytes:
                self.stop(member.name, f"the import exceeds {MAX_TOTAL_BYTES} bytes; the rest were not read")
            elif limit == MAX_CLIXML_BYTES:
                self.malformed_file(member.name, f"more than {MAX_CLIXML_BYTES} bytes, the limit for one file")
            else:
                self.malformed_file(member.name, f"inflates past {limit} bytes from {member.compressed} compressed "
                                                 f"(a ratio above {MAX_COMPRESSION_RATIO}:1): refused as a zip bomb")
            return
        self.clixml_bytes += len(payload)
        self.add_file(member.name, payload)

    def stop(self, name: str, reason: str) -> None:
        """This file and every one after it are not read (a limit of the whole import was reached)."""
        self.malformed_file(name, reason)
        self.stopped = True

    def _add_log(self, member: _Member, stream: Any) -> None:
        self.seen.add(member.name)
        self.log_bytes += member.compressed
        if self.log_bytes > MAX_LOG_BYTES:
            self.malformed_file(member.name, f"the import's logs exceed {MAX_LOG_BYTES} bytes; not read")
            self.unreadable_logs.append((member.name, "over the size limit"))
            return
        before = self.logs.malformed.lines
        try:
            self.logs.add_file(member.name, stream, compressed_size=member.compressed)
        except LogFormatError as exc:
            reason = str(exc).removeprefix(f"{member.name}: ")
            self.malformed_file(member.name, reason)
            self.unreadable_logs.append((member.name, reason))
            return
        self.log_files.append(member.name)
        bad = self.logs.malformed.lines - before
        record: dict[str, Any] = {"file": member.name, "source": LOGS_SOURCE}
        if bad:
            record["note"] = f"{bad} malformed line(s) counted and skipped"
        self.recognised.append(record)

    def add_file(self, name: str, payload: bytes) -> None:
        self.seen.add(name)
        head = _first_character(payload)
        if head == "<":
            try:
                parsed = _Parsed.of(name, parse_clixml(payload, source=name))
            except ClixmlError as exc:
                self.malformed_file(name, str(exc).removeprefix(f"{name}: ").removeprefix(f"{name}:"))
                return
            if self._keep(name, parsed.values):
                self.clixml_files.append(parsed)
        elif head in ("{", "["):
            self._add_json(name, payload)
        else:
            self.skip(name, "neither CLIXML nor JSON")

    def _keep(self, name: str, values: int) -> bool:
        """Count what a file adds to the import; past MAX_KEPT_VALUES it is refused (and so is every later file)."""
        self.kept += values
        if self.full:
            self.malformed_file(name, f"the import holds more than {MAX_KEPT_VALUES} values; this file and the rest "
                                      "were not read")
            return False
        return True

    def _add_json(self, name: str, payload: bytes) -> None:
        try:
            document = loads_json(decode_text(payload, source=name))
        except (ClixmlError, ValueError, RecursionError) as exc:
            self.malformed_file(name, f"not valid JSON: {str(exc).removeprefix('not valid JSON: ')}")
            return
        if not self._keep(name, _values(document)):
            return
        if isinstance(document, dict) and MANIFEST_KEY in document:
            self.manifests.append((name, document))
        elif isinstance(document, dict) and GRAPH_KEY in document:
            self.graph.append((name, document))
        else:
            self.skip(name, "JSON that the collection script did not write (no hmaCheckManifest or hmaCheckGraph key)")

    # ------------------------------------------------------------------------------------------ manifest
    def _manifest_entries(self) -> dict[str, dict[str, Any]]:
        """Manifest entries by the path of their file, relative to the import root."""
        entries: dict[str, dict[str, Any]] = {}
        for name, manifest in self.manifests:
            base = PurePosixPath(name).parent
            raw = manifest.get("entries")
            if not isinstance(raw, list):
                self.malformed_file(name, "manifest without an entries list")
                continue
            for index, entry in enumerate(raw):
                if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
                    self.malformed_file(name, f"manifest entry {index} has no source")
                    continue
                file = entry.get("file")
                key = (base / file).as_posix() if isinstance(file, str) and file else f"{name}#{index}"
                entries[key] = entry
        return entries

    # ------------------------------------------------------------------------------------------ building
    def finish(self) -> ImportOutcome:
        entries = self._manifest_entries()
        manifest = self.manifests[0][1] if self.manifests else {}
        snapshot = Snapshot.new(target=self._target(manifest))
        collected_at = manifest.get("finishedAt") or manifest.get("startedAt")
        if isinstance(collected_at, str):
            try:
                parse_utc(collected_at)
                snapshot.collected_at = collected_at
            except ValueError:
                pass
        snapshot.collected_by = self._collected_by(manifest)

        captures: list[_Capture] = []
        for parsed in self.clixml_files:
            captures.extend(self._recognise(parsed, entries.get(parsed.name)))
        servers = self._servers(captures)
        results: dict[tuple[str, str | None], list[_Capture]] = defaultdict(list)
        for capture in captures:
            for scope, objects in self._place(capture, servers):
                results[(capture.source, scope)].append(replace(capture, scope=scope, objects=objects))

        for (source, scope), group in results.items():
            snapshot.add(self._result(source, scope, group, snapshot.collected_at))
        log_entries = [entry for entry in entries.values() if entry.get("source") == LOGS_SOURCE]
        self._logs_result(snapshot, log_entries)
        entries = {key: entry for key, entry in entries.items() if entry.get("source") != LOGS_SOURCE}
        self._manifest_only_results(entries, snapshot, {c.file for c in captures})
        for name, envelope in self.graph:
            result = self._graph_result(name, envelope, snapshot.collected_at)
            if result is not None:
                snapshot.add(result)
        flags = " --owa-ecp" if self.options.owa_ecp else ""
        snapshot.add(options_result(self.options, f"hma-check import{flags} {self.origin}"))
        self._skipped(snapshot, servers)
        snapshot.target["import"] = {
            "recognised": self.recognised,
            "unrecognised": self.unrecognised,
            "unplaced": self.unplaced,
            "malformed": self.malformed,
        }
        return ImportOutcome(snapshot, self.recognised, self.unrecognised, self.malformed, self.unplaced)

    def _target(self, manifest: dict[str, Any]) -> dict[str, Any]:
        target: dict[str, Any] = {"mode": "offline import", "path": self.origin}
        for key in ("scriptVersion", "exchangeServer", "organization", "startedAt", "finishedAt", "psVersion"):
            if isinstance(manifest.get(key), str):
                target[key] = manifest[key]
        return target

    @staticmethod
    def _collected_by(manifest: dict[str, Any]) -> dict[str, str]:
        importer = who_ran_it()
        who = {"imported_by": importer["user"], "imported_on": importer["host"]}
        if isinstance(manifest.get("userName"), str) and isinstance(manifest.get("computerName"), str):
            return {"user": manifest["userName"], "host": manifest["computerName"], **who}
        return {**importer, **who}

    def _recognise(self, parsed: "_Parsed", entry: dict[str, Any] | None) -> list[_Capture]:
        name, by_source = parsed.name, dict(parsed.by_source)
        if not by_source and not parsed.unknown and entry is not None and entry["source"] in BY_NAME:
            by_source[entry["source"]] = []  # an empty result: the manifest says which cmdlet returned nothing
        if not by_source:
            kinds = parsed.kinds or ["no objects"]
            self.skip(name, "holds nothing hma-check reads (" + ", ".join(k[:100] for k in kinds[:3]) + ")")
            return []
        scope = entry.get("server") if entry and isinstance(entry.get("server"), str) else None
        captures = [_Capture(name, source, scope, objs, entry or {}) for source, objs in by_source.items()]
        for capture in captures:
            record: dict[str, Any] = {"file": name, "source": capture.source, "objects": len(capture.objects)}
            if parsed.unknown:
                record["note"] = f"{parsed.unknown} other objects ignored"
            self.recognised.append(record)
        return captures

    @staticmethod
    def _servers(captures: list[_Capture]) -> list[dict[str, Any]]:
        servers: list[dict[str, Any]] = []
        for capture in captures:
            if capture.source == "exchange.servers":
                try:
                    servers.extend(shape("exchange.servers", capture.objects))
                except ShapeError:
                    pass
        # Scopes are server Names: a record without one cannot be a scope.
        return [server for server in servers if isinstance(server.get("Name"), str) and server["Name"]]

    def _place(self, capture: _Capture,
               servers: list[dict[str, Any]]) -> list[tuple[str | None, list[ClixmlObject]]]:
        """Split one file's objects by the server they belong to (scope = the server's Name)."""
        if BY_NAME[capture.source].scope != "server":
            return [(None, capture.objects)]
        if capture.source in SERVER_PROPERTY_SOURCES and capture.objects:
            # A virtual directory names its server; one file may hold every server's (Get-*VirtualDirectory alone).
            by_server: dict[str, list[ClixmlObject]] = defaultdict(list)
            for obj in capture.objects:
                server = obj.get("Server")
                if not isinstance(server, str) or not server:
                    self._unplaced(capture, "an object without a Server property")
                    return []
                by_server[server].append(obj)
            return list(by_server.items())
        if capture.scope:
            return [(capture.scope, capture.objects)]
        # Certificates and OS records name no server: the manifest does, or else PSComputerName tells who answered.
        names = {o.computer_name for o in capture.objects if o.computer_name}
        spec = BY_NAME[capture.source]
        if len(names) > 1:
            self._unplaced(capture, f"its objects come from several computers ({', '.join(sorted(names))})")
        elif names and not servers:
            self._unplaced(capture, f"it comes from {next(iter(names))}, and exchange.servers (Get-ExchangeServer) is "
                                    "not in the import to say which server that is: add it")
        elif names:
            computer = names.pop()
            for server in servers:
                if computer.casefold() in (str(server.get("Fqdn", "")).casefold(),
                                           str(server.get("Name", "")).casefold()):
                    return [(server["Name"], capture.objects)]
            self._unplaced(capture, f"PSComputerName {computer} is not among exchange.servers (Name or Fqdn)")
        else:
            # A capture that names no computer (HealthChecker's ExSetup.xml) can only be placed where one server
            # could have answered it: the organisation's only server that has this source.
            covered = [server for server in servers if spec.excluded(server) is None]
            if len(covered) == 1:
                self._note(capture, f"placed on {covered[0]['Name']}: it names no computer, and that is the only "
                                    "server of exchange.servers with this source")
                return [(covered[0]["Name"], capture.objects)]
            why = "exchange.servers is not in the import" if not servers else \
                f"{len(covered)} servers could have answered it"
            self._unplaced(capture, f"it names no computer (no manifest entry, no PSComputerName) and {why}")
        return []

    def _note(self, capture: _Capture, note: str) -> None:
        for record in self.recognised:
            if record["file"] == capture.file and record["source"] == capture.source:
                record["note"] = f"{record['note']}; {note}" if record.get("note") else note

    def _unplaced(self, capture: _Capture, reason: str) -> None:
        """Read, but not placed on a server: listed apart from files hma-check does not read at all."""
        self.recognised[:] = [r for r in self.recognised
                              if not (r["file"] == capture.file and r["source"] == capture.source)]
        self.unplaced.append({"file": capture.file, "source": capture.source, "reason": reason})

    def _result(self, source: str, scope: Any, group: list[_Capture], collected_at: str) -> SourceResult:
        files = sorted({c.file for c in group})
        command = _command(source, scope, group[0].entry, files)
        started = group[0].entry.get("startedAt") if isinstance(group[0].entry.get("startedAt"), str) else collected_at
        duration = group[0].entry.get("durationMs")
        duration = duration if isinstance(duration, int) and not isinstance(duration, bool) and duration >= 0 else 0
        try:
            shaped = [shape(source, c.objects) for c in group]
        except ShapeError as exc:
            return SourceResult.error_result(source, f"{', '.join(files)}: {exc}", command=command, scope=scope,
                                             started=started, duration_ms=duration)
        if any(s != shaped[0] for s in shaped[1:]):
            return SourceResult.error_result(
                source, f"{len(files)} files hold different {source} data ({', '.join(files)}): import only one",
                command=command, scope=scope, started=started, duration_ms=duration)
        return SourceResult.ok_result(source, shaped[0], command=command, scope=scope, started=started,
                                      duration_ms=duration)

    def _logs_result(self, snapshot: Snapshot, entries: list[dict[str, Any]]) -> None:
        """logs.httpproxy from the log files read, with the collection script's per-server record (a server whose
        logs could not be copied is listed with its error; HMA-CLIENT-001 names it)."""
        if not self.log_files and not entries and not self.unreadable_logs:
            return     # no log supplied: recorded as skipped, like every other source no file supplied
        command = (f"HttpProxy logs: {len(self.log_files)} file(s) streamed, every line read "
                   f"(imported from {self.origin})")
        if not self.log_files:
            problems = [f"{e.get('server') or '?'}: the collection script reported: {e.get('error')}"
                        for e in entries if e.get("status") == "error"]
            problems += [f"{name}: {reason}" for name, reason in self.unreadable_logs[:5]]
            if problems:
                snapshot.add(SourceResult.error_result(
                    LOGS_SOURCE, "no HttpProxy log could be read: " + "; ".join(problems), command=command,
                    started=snapshot.collected_at))
                return
        data = self.logs.result(pseudonymise=self.pseudonymise_users)
        data["servers"] = _coverage(data["servers"], entries)
        snapshot.add(SourceResult.ok_result(LOGS_SOURCE, data, command=command, started=snapshot.collected_at))

    def _manifest_only_results(self, entries: dict[str, dict[str, Any]], snapshot: Snapshot,
                               used: set[str]) -> None:
        """Manifest entries whose file failed to parse or that record a failed query become error results."""
        for key, entry in entries.items():
            source, server = entry["source"], entry.get("server")
            if source not in BY_NAME or key in used:
                continue
            scope = server if isinstance(server, str) and BY_NAME[source].scope else None
            if source_key(source, scope) in snapshot.sources:
                continue  # a file supplied it after all
            if entry.get("status") == "skipped":
                # skipped on purpose by the script (a cmdlet this build lacks): the contract decides what it means
                snapshot.add(SourceResult.skipped_result(
                    source, f"the collection script skipped it: {entry.get('error') or 'no reason given'}",
                    command=_command(source, scope, entry, [key]), scope=scope))
                continue
            if entry.get("status") == "error":
                error = f"the collection script reported: {entry.get('error') or 'an unknown failure'}"
            elif key in self.broken:
                error = f"{key}: {self.broken[key]}"
            elif entry.get("status") == "ok" and entry.get("count") == 0 and not entry.get("file"):
                # The cmdlet returned nothing, so the script wrote no file: an empty list, or null where allowed.
                snapshot.add(self._result(source, scope, [_Capture(key, source, scope, [], entry)],
                                          snapshot.collected_at))
                continue
            elif entry.get("file") and key not in self.seen:
                error = f"the manifest lists {key} but the import has no such file"
            else:
                continue
            snapshot.add(SourceResult.error_result(source, error, command=_command(source, scope, entry, [key]),
                                                   scope=scope, started=snapshot.collected_at))

    def _graph_result(self, name: str, envelope: dict[str, Any], collected_at: str) -> SourceResult | None:
        source, tenant = envelope.get("source"), envelope.get("tenantId")
        spec = BY_NAME.get(source) if isinstance(source, str) else None
        if spec is None or spec.collector != "graph" or not isinstance(source, str):
            self.malformed_file(name, f"hmaCheckGraph file for an unknown Graph source {str(source)[:60]!r}")
            return None
        if not isinstance(tenant, str) or not tenant:
            self.malformed_file(name, "hmaCheckGraph file without a tenantId")
            return None
        command = f"{envelope.get('command') or spec.filled_by} (imported from {name})"
        started = envelope.get("startedAt") if isinstance(envelope.get("startedAt"), str) else collected_at
        if envelope.get("status") == "error":
            return SourceResult.error_result(source, f"the collection script reported: {envelope.get('error')}",
                                             command=command, scope=tenant, started=started)
        data = envelope.get("data", _ABSENT)
        expects_list = spec.shape.startswith("list of")
        if data is _ABSENT or isinstance(data, list) != expects_list or not isinstance(data, (list, dict)):
            self.malformed_file(name, f"{source}: data must be {'a list' if expects_list else 'an object'}")
            return SourceResult.error_result(source, f"{name}: data is not {'a list' if expects_list else 'an object'}",
                                             command=command, scope=tenant, started=started)
        self.recognised.append({"file": name, "source": source,
                                        "objects": len(data) if isinstance(data, list) else 1})
        return SourceResult.ok_result(source, data, command=command, scope=tenant, started=started)

    def _skipped(self, snapshot: Snapshot, servers: list[dict[str, Any]]) -> None:
        tenants = sorted({r.scope for r in snapshot.sources.values() if r.name.startswith("graph.") and r.scope})
        present = {(r.name, r.scope) for r in snapshot.sources.values()}
        names = {r.name for r in snapshot.sources.values()}
        for spec in SOURCES:
            if spec.collector == "probe":
                if spec.name not in names:
                    snapshot.add(SourceResult.skipped_result(
                        spec.name, "outside-in probes do not run in an offline import"))
                continue
            if spec.scope == "server" and servers:
                for server in servers:
                    if (spec.name, server["Name"]) in present:
                        continue
                    # As a live scan records it: a server the contract leaves out is skipped with the reason; any
                    # other server without a file lacks the fact (the checks say ERROR for it).
                    reason = spec.excluded(server) or NOT_SUPPLIED
                    snapshot.add(SourceResult.skipped_result(spec.name, reason, scope=server["Name"]))
            elif spec.scope == "tenant" and tenants:
                for tenant in tenants:
                    if (spec.name, tenant) not in present:
                        snapshot.add(SourceResult.skipped_result(spec.name, NOT_SUPPLIED, scope=tenant))
            elif spec.name not in names:
                snapshot.add(SourceResult.skipped_result(spec.name, NOT_SUPPLIED))


_ABSENT = object()


def _first_character(payload: bytes) -> str:
    """The first character after any BOM and white space, told from the bytes alone: one invalid byte later in the
    file must make it a malformed CLIXML (or JSON) file, reported at that byte, not an unrecognised one."""
    head = payload[:4096]
    for bom, encoding in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            head, chosen = head[len(bom):], encoding
            break
    else:
        chosen = "utf-16-le" if head[1:2] == b"\x00" else "utf-16-be" if head[:1] == b"\x00" else "utf-8"
    return head.decode(chosen, "ignore").lstrip(" \t\r\n")[:1]


def _coverage(seen: list[dict[str, Any]], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Servers the logs came from (ServerHostName), merged with the collection script's per-server record."""
    by_name = {str(row["server"]).casefold(): dict(row) for row in seen}
    for entry in entries:
        server = entry.get("server")
        if not isinstance(server, str) or not server:
            continue
        row = by_name.setdefault(server.casefold(), {"server": server, "status": "ok", "requests": 0,
                                                     "first_seen": None, "last_seen": None})
        if entry.get("status") == "error":
            row.update(status="error", error=str(entry.get("error") or "unknown error")[:500])
        elif isinstance(entry.get("note"), str) and entry["note"]:
            row["note"] = entry["note"][:300]
    return sorted(by_name.values(), key=lambda row: str(row["server"]).casefold())


def _command(source: str, scope: str | None, entry: dict[str, Any], files: list[str]) -> str:
    command = entry.get("command")
    if not isinstance(command, str) or not command:
        command = BY_NAME[source].filled_by.replace("<server>", scope or "<server>")
    return f"{command} (imported from {', '.join(files)})"
