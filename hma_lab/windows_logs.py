"""The lab's Windows file system under Exchange's install folder, and the one pipeline that summarises its logs.

A server's ``C:\\Program Files\\Microsoft\\Exchange Server\\V15\\`` is the folder its HttpProxy logs are written to by
the lab's HTTPS endpoints (lab/httpproxy_log.py). Get-ChildItem lists it as FileInfo objects; ``Import-Csv | Where-
Object -Property X -Match R | Group-Object -Property A,B -NoElement`` is answered as PowerShell does: Import-Csv
takes each file's first line as the header, -match is a case-insensitive regular expression, Group-Object groups
case-insensitively (keeping the first value's case), names a group by its values joined with ', ' and, with
-NoElement, sends Count, Name and Values only. The lab reads the files with its own csv reader.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from hma_lab import errors
from hma_lab.psrp import CommandCall
from hma_lab.psvalues import ArrayList, Serialized, ex_object

INSTALL_PATH = "C:\\Program Files\\Microsoft\\Exchange Server\\V15\\"
FS_PROVIDER = "Microsoft.PowerShell.Core\\FileSystem"
_PIPELINE = ("import-csv", "where-object", "group-object")


class InstallFolder:
    """Exchange's install folder on one lab server, backed by a real folder (missing until something is logged)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def resolve(self, text: str) -> Path | None:
        cleaned = text.replace("/", "\\")
        if not cleaned.lower().startswith(INSTALL_PATH.lower().rstrip("\\")):
            return None
        rest = [part for part in cleaned[len(INSTALL_PATH.rstrip("\\")):].split("\\") if part]
        return self.root.joinpath(*rest)

    def windows_path(self, path: Path) -> str:
        relative = path.relative_to(self.root)
        return INSTALL_PATH + "\\".join(relative.parts)

    def child_items(self, path_text: str, *, recurse: bool, pattern: str | None, files_only: bool,
                    cmdlet: str) -> Iterator[Any]:
        folder = self.resolve(path_text)
        if folder is None or not folder.exists():
            yield _path_not_found(cmdlet, path_text)
            return
        found = folder.rglob("*") if recurse else folder.iterdir()
        for item in sorted(found):
            if files_only and not item.is_file():
                continue
            if pattern and not fnmatch.fnmatch(item.name.lower(), pattern.lower()):
                continue
            yield self.file_info(item) if item.is_file() else self.directory_info(item)

    def file_info(self, path: Path) -> Serialized:
        stat = path.stat()
        written = datetime.fromtimestamp(stat.st_mtime, timezone.utc)
        created = datetime.fromtimestamp(stat.st_ctime, timezone.utc)
        full = self.windows_path(path)
        directory = full.rsplit("\\", 1)[0]
        props = {"Name": path.name, "Length": stat.st_size, "DirectoryName": directory, "Directory": directory,
                 "IsReadOnly": False, "Exists": True, "FullName": full, "Extension": path.suffix,
                 "CreationTime": created, "CreationTimeUtc": created, "LastAccessTime": written,
                 "LastAccessTimeUtc": written, "LastWriteTime": written, "LastWriteTimeUtc": written,
                 "Attributes": "Archive"}
        notes = {"PSPath": f"{FS_PROVIDER}::{full}", "PSParentPath": f"{FS_PROVIDER}::{directory}",
                 "PSChildName": path.name, "PSDrive": "C", "PSProvider": FS_PROVIDER, "PSIsContainer": False,
                 "Mode": "-a----", "BaseName": path.stem, "VersionInfo": f"File: {full}"}
        return ex_object(["System.IO.FileInfo", "System.IO.FileSystemInfo", "System.MarshalByRefObject",
                          "System.Object"], full, props, notes)

    def directory_info(self, path: Path) -> Serialized:
        full = self.windows_path(path)
        parent = full.rsplit("\\", 1)[0]
        props = {"Name": path.name, "FullName": full, "Parent": parent, "Exists": True, "Attributes": "Directory"}
        notes = {"PSPath": f"{FS_PROVIDER}::{full}", "PSParentPath": f"{FS_PROVIDER}::{parent}",
                 "PSChildName": path.name, "PSDrive": "C", "PSProvider": FS_PROVIDER, "PSIsContainer": True,
                 "Mode": "d-----", "BaseName": path.name}
        return ex_object(["System.IO.DirectoryInfo", "System.IO.FileSystemInfo", "System.MarshalByRefObject",
                          "System.Object"], full, props, notes)

    # ---------------------------------------------------------------------------------------------- pipeline
    def summarise(self, commands: list[CommandCall]) -> Iterator[Any]:
        """``Import-Csv -LiteralPath ... | Where-Object -Property P -Match R | Group-Object -Property ... -NoElement``
        (the shape the product sends); any other pipeline is refused as the lab does."""
        names = [c.name.lower() for c in commands]
        if names != list(_PIPELINE) or any(c.is_script for c in commands):
            raise errors.CmdletError(errors.error_record(
                "The lab answers one cmdlet per pipeline, or Import-Csv | Where-Object | Group-Object.",
                exception_type="System.NotSupportedException", category=errors.ErrorCategory.NotImplemented,
                reason="NotSupportedException", fqid="LabPipeline"))
        read, where, group = (_named(c) for c in commands)
        paths = _strings(read.get("literalpath") or read.get("path"))
        prop, pattern = str(where.get("property") or ""), re.compile(str(where.get("match") or ""), re.IGNORECASE)
        keys = _strings(group.get("property"))
        groups: dict[tuple[str, ...], list[Any]] = {}
        for text in paths:
            path = self.resolve(text)
            if path is None or not path.is_file():
                yield _path_not_found("Import-Csv", text)
                continue
            for row in _import_csv(path):
                value = row.get(prop.lower())
                if value is None or not pattern.search(str(value)):
                    continue
                values = ["" if row.get(k.lower()) is None else str(row[k.lower()]) for k in keys]
                key = tuple(v.casefold() for v in values)
                found = groups.get(key)
                if found is None:
                    groups[key] = [values, 1]
                else:
                    found[1] += 1
        for values, count in groups.values():
            name = ", ".join(values)
            yield ex_object(["Microsoft.PowerShell.Commands.GroupInfoNoElement",
                             "Microsoft.PowerShell.Commands.GroupInfo", "System.Object"],
                            "Microsoft.PowerShell.Commands.GroupInfoNoElement",
                            {"Values": ArrayList(values), "Count": count, "Group": None, "Name": name})


def _import_csv(path: Path) -> Iterator[dict[str, str | None]]:
    """Import-Csv: the first line names the properties (case-insensitively); a short row leaves the rest $null."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            return
        names = [h.lower() for h in header]
        for row in reader:
            yield {name: (row[i] if i < len(row) else None) for i, name in enumerate(names)}


def _named(command: CommandCall) -> dict[str, Any]:
    return {str(name).lower(): value for name, value in command.parameters if name is not None}


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _path_not_found(cmdlet: str, path: str) -> errors.CmdletError:
    verb, _, noun = cmdlet.partition("-")
    return errors.CmdletError(errors.error_record(
        f"Cannot find path '{path}' because it does not exist.",
        exception_type="System.Management.Automation.ItemNotFoundException", category=errors.ErrorCategory.ObjectNotFound,
        reason="ItemNotFoundException", fqid=f"PathNotFound,Microsoft.PowerShell.Commands.{noun}{verb}Command",
        target=path), terminating=False)
