"""Compiled Jinja code kept between runs in the user's cache folder, so a run does not compile the catalogue and
the report templates again (about half a second of every report, whatever the organisation's size).

The folder is ``$HMA_CHECK_CACHE_DIR``, else ``$XDG_CACHE_HOME/hma-check`` or ``~/.cache/hma-check``;
``HMA_CHECK_CACHE_DIR=off`` (or empty) turns the cache off. Each kind of code lives in a subfolder named after a
hash of everything that shapes it: this Python's bytecode tag, Jinja's version and the source of the modules that
generate it. A change to any of those is a new subfolder, never stale code. The folder must belong to the user and
be closed to others (as Jinja's own bytecode cache requires), else the cache is not used: its files are code this
process runs. Nothing here ever fails a run: a folder that cannot be made or read is no cache.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path

CACHE_ENV = "HMA_CHECK_CACHE_DIR"
KEEP = 3            # subfolders of one kind kept (the newest): other installs and recent versions
_OFF = {"", "off", "0", "no", "false", "none"}


def cache_root() -> Path | None:
    """Where the cache lives, or None when it is turned off or there is no home to put it in."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in _OFF else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return Path(base) / "hma-check"
    try:
        return Path.home() / ".cache" / "hma-check"
    except (RuntimeError, KeyError):     # no home directory (a service account without a profile)
        return None


def code_key(*modules: Path) -> str:
    """A hash of what shapes generated code: this Python's bytecode tag, Jinja's version and these source files."""
    import jinja2

    digest = hashlib.sha256(f"{sys.implementation.cache_tag}\0{jinja2.__version__}\0".encode())
    for module in sorted(modules):
        digest.update(str(module.name).encode() + b"\0" + module.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def cache_folder(kind: str, *modules: Path, create: bool = True) -> Path | None:
    """The subfolder for ``kind`` at the current key, made (mode 0700) if needed, or with ``create=False`` where it
    would be (``make_private`` makes it); None when there is no usable one."""
    root = cache_root()
    if root is None:
        return None
    try:
        folder = root / f"{kind}-{code_key(*modules)}"
        if not create and not folder.exists():
            return folder
        return make_private(folder)
    except OSError:
        return None


def make_private(folder: Path) -> Path | None:
    """The folder (a subfolder of the cache root), made with mode 0700 if needed; None if it is not private."""
    root, kind = folder.parent, folder.name.rsplit("-", 1)[0]
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(root):
            return None
        if not folder.is_dir():
            folder.mkdir(mode=0o700, exist_ok=True)
            _prune(root, kind, keep=folder)
        return folder if _private(folder) else None
    except OSError:
        return None


def _private(folder: Path) -> bool:
    """Owned by this user and writable by nobody else (POSIX; on Windows the profile's ACLs do this)."""
    if not hasattr(os, "getuid"):
        return True
    info = folder.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _prune(root: Path, kind: str, keep: Path) -> None:
    """Keep the newest KEEP subfolders of this kind: each edit of a generating module makes a new one."""
    import shutil

    others = sorted((p for p in root.glob(f"{kind}-*") if p.is_dir() and p != keep),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)
