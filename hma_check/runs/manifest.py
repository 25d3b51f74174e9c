"""manifest.json: the SHA-256 and size of every file a run wrote, and the check of a folder against it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hma_check import __version__
from hma_check.errors import InputError
from hma_check.contract.findings import MAX_FINDINGS_BYTES
from hma_check.contract.snapshot import iso_utc, utc_now
from hma_check.util.json_file import JsonError, loads_json
from hma_check.util.read_file import read_limited

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.p7s"
MANIFEST_VERSION = 1
# Files about the manifest, not in it: the manifest itself and its detached signature.
NOT_COVERED = frozenset({MANIFEST_NAME, SIGNATURE_NAME})
_CHUNK = 1 << 20
# A run writes a dozen files, a few hundred bytes of manifest each; a manifest larger than this is not one.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_bytes(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def sha256_file(path: Path, limit: int | None = None) -> tuple[str, int]:
    """Hash in chunks: evidence of a large tenant is hundreds of megabytes. With ``limit``, stop one byte past it
    (a file that grew since its size was taken is then simply a different size)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK if limit is None else min(_CHUNK, limit + 1 - size)):
            digest.update(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                break
    return digest.hexdigest(), size


def build_manifest(files: dict[str, bytes], roles: dict[str, str], run: dict[str, Any],
                   hashed: dict[str, str] | None = None) -> bytes:
    """The manifest of files about to be written (relative POSIX path -> bytes), in a stable order. ``hashed``: the
    SHA-256 of files already hashed from these very bytes (the evidence, whose hash the report shows)."""
    hashed = hashed or {}
    document = {
        "manifest_version": MANIFEST_VERSION,
        "tool": "hma-check",
        "tool_version": __version__,
        "created_at": iso_utc(utc_now()),
        "hash_algorithm": "sha256",
        "run": run,
        "files": {path: {"sha256": hashed.get(path) or sha256_bytes(files[path]), "size": len(files[path]),
                         "role": roles[path]}
                  for path in sorted(files)},
    }
    return (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def safe_relative(path: str) -> bool:
    """A manifest entry must name a file inside the folder: relative, forward slashes, no '..', no odd characters."""
    if not path or "\\" in path or "\x00" in path or not path.isprintable():
        return False
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts and "." not in pure.parts and str(pure) == path


# ----------------------------------------------------------------------------------------------------- verification

@dataclass
class Problem:
    kind: str      # modified | missing | added | inconsistent | manifest
    path: str
    detail: str

    def line(self) -> str:
        return f"{self.kind.upper()} {self.path}: {self.detail}"


@dataclass
class Verification:
    folder: Path
    manifest: dict[str, Any]
    manifest_bytes: bytes
    matched: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def manifest_sha256(self) -> str:
        return sha256_bytes(self.manifest_bytes)


def read_manifest(folder: str | Path) -> bytes:
    """The manifest's bytes; a folder that is not a run folder is the user's mistake (InputError)."""
    folder = Path(folder)
    if not os.path.isdir(folder):   # os.path: a name too long to exist is not an exception
        raise InputError("not a folder", path=str(folder))
    path = folder / MANIFEST_NAME
    if not os.path.isfile(path):
        raise InputError(f"no {MANIFEST_NAME} here: not an hma-check output folder, or written before manifests "
                         "existed (run 'hma-check report' again)", path=str(folder))
    return read_limited(path, MAX_MANIFEST_BYTES, what="manifest")


def parse_manifest(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The manifest document, or why it is not one (an edited or damaged manifest is a finding, not a usage error)."""
    try:
        document = loads_json(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"not valid JSON (not UTF-8 at byte {exc.start})"
    except JsonError as exc:
        return None, exc.message + (f" (line {exc.line})" if exc.line else "")
    except RecursionError:
        return None, "not valid JSON (nested too deeply)"
    if not isinstance(document, dict) or document.get("tool") != "hma-check":
        return None, "not an hma-check manifest"
    if document.get("manifest_version") != MANIFEST_VERSION:
        return None, f"manifest_version {str(document.get('manifest_version'))[:40]!r}; this hma-check reads " \
                     f"{MANIFEST_VERSION}"
    for key in ("tool_version", "created_at"):
        if not isinstance(document.get(key), str):
            return None, f"its {key} is not text"
    files = document.get("files")
    if not isinstance(files, dict) or not files:
        return None, "no files listed"
    for path, entry in files.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
                and isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            return None, f"entry {path[:80]!r} lacks a SHA-256 (64 hex digits) or a size"
    run = document.get("run", {})
    if not isinstance(run, dict) or not _list_of_objects(run.get("checks", [])) or not all(
            isinstance(entry.get("sha256"), (str, type(None))) for entry in run.get("checks", [])):
        return None, "its 'run' record is not an object with a list of checks files"
    return document, None


def _list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(entry, dict) for entry in value)


def verify_folder(folder: str | Path) -> Verification:
    """Recompute every listed file's SHA-256 and size, list files that are missing, changed or not in the manifest."""
    folder = Path(folder)
    raw = read_manifest(folder)
    document, error = parse_manifest(raw)
    result = Verification(folder=folder, manifest=document or {}, manifest_bytes=raw)
    if document is None:
        result.problems.append(Problem("manifest", MANIFEST_NAME, f"{error}: nothing can be verified against it"))
        return result
    listed: dict[str, dict[str, Any]] = document["files"]
    for path in sorted(listed):
        entry = listed[path]
        if not safe_relative(path) or path in NOT_COVERED:
            result.problems.append(Problem("manifest", path[:200], "the manifest names a path outside this folder"))
            continue
        target = folder / path
        if os.path.islink(target) or (os.path.exists(target) and not os.path.isfile(target)):
            result.problems.append(Problem("modified", path, "is no longer a regular file"))
            continue
        if not os.path.exists(target):
            result.problems.append(Problem("missing", path, f"listed in the manifest ({entry['size']} bytes) but not "
                                                            "in the folder"))
            continue
        size = target.stat().st_size
        if size != entry["size"]:   # no need to read a file whose size already differs (it may be huge)
            result.problems.append(Problem("modified", path, f"{size} bytes; the manifest records {entry['size']} "
                                                             "bytes (not hashed: the size already differs)"))
            continue
        digest, size = sha256_file(target, limit=entry["size"])
        if digest != entry["sha256"] or size != entry["size"]:
            result.problems.append(Problem("modified", path, f"SHA-256 {digest} ({size} bytes); the manifest "
                                                             f"records {entry['sha256']} ({entry['size']} bytes)"))
        else:
            result.matched.append(path)
    for path in _files_in(folder):
        if path not in listed and path not in NOT_COVERED:
            result.problems.append(Problem("added", path, "in the folder but not in the manifest"))
    _cross_check(result)
    _builtin_note(result)
    return result


def _files_in(folder: Path) -> list[str]:
    found: list[str] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        names = files + [d for d in dirs if (base / d).is_symlink()]
        found.extend((base / name).relative_to(folder).as_posix() for name in names)
    return sorted(found)


def _cross_check(result: Verification) -> None:
    """findings.json states which evidence and checks it was evaluated from; both must be the files listed here.

    A manifest rewritten to cover a swapped evidence.json still leaves findings.json naming the original hash.
    """
    if "findings.json" not in result.matched or "evidence.json" not in result.manifest["files"]:
        return
    try:
        raw = read_limited(result.folder / "findings.json", MAX_FINDINGS_BYTES, what="findings file")
        document = loads_json(raw.decode("utf-8"))
    except (InputError, ValueError, RecursionError):   # UnicodeDecodeError and JsonError are ValueErrors
        document = None
    metadata = document.get("metadata") if isinstance(document, dict) else None
    if not isinstance(metadata, dict) or not _list_of_objects(metadata.get("checks_files", [])):
        result.problems.append(Problem("inconsistent", "findings.json", "not a readable findings document"))
        return
    evidence = result.manifest["files"]["evidence.json"]["sha256"]
    if metadata.get("evidence_sha256") != evidence:
        result.problems.append(Problem("inconsistent", "evidence.json", f"findings.json was evaluated from evidence "
                                       f"{metadata.get('evidence_sha256')}, not from this evidence.json ({evidence})"))
    recorded = {entry.get("sha256") for entry in result.manifest.get("run", {}).get("checks", [])}
    for entry in metadata.get("checks_files", []):
        if not isinstance(entry.get("sha256"), str) or entry["sha256"] not in recorded:
            result.problems.append(Problem("inconsistent", "findings.json", f"evaluated with checks file "
                                           f"{entry.get('path')} ({entry.get('sha256')}), which the manifest does not "
                                           "record"))


def _builtin_note(result: Verification) -> None:
    """The shipped catalogue is not copied: it is identified by hash and tool version, which we can compare."""
    from hma_check.util.resources import shipped_checks_files

    shipped = {sha256_file(path)[0]: path.name for path in shipped_checks_files()}
    for entry in result.manifest.get("run", {}).get("checks", []):
        if entry.get("role") != "builtin":
            continue
        name, version = entry.get("name"), result.manifest.get("tool_version")
        if entry.get("sha256") in shipped:
            result.notes.append(f"built-in {name}: identical to the one in this installed hma-check {__version__}")
        elif version == __version__:
            result.notes.append(f"built-in {name}: differs from the one in this installed hma-check {__version__} "
                                "(a modified installation?); the report's hash is " + str(entry.get("sha256")))
        else:
            result.notes.append(f"built-in {name}: from hma-check {version} (SHA-256 {entry.get('sha256')}); this is "
                                f"{__version__}, so it cannot be recomputed here")
