"""Compiled Jinja code kept between runs in the user's cache folder, so a run does not compile the catalogue and
the report templates again (about half a second of every report, whatever the organisation's size).

The folder is ``$HMA_CHECK_CACHE_DIR``, else ``$XDG_CACHE_HOME/hma-check`` or ``~/.cache/hma-check``;
``HMA_CHECK_CACHE_DIR=off`` (or empty) turns the cache off. Each kind of code lives in a subfolder named after a
hash of everything that shapes it: this Python's bytecode tag, Jinja's version and the source of the modules that
generate it. A change to any of those is a new subfolder, never stale code. The folder must belong to the user and
be writable by nobody else (as Jinja's own bytecode cache requires), and so must every file read back, checked on
the open file; else the cache is not used: its files are code this process runs. Nothing here ever fails a run: a folder that cannot be made or read is no cache.
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
    """A hash of what shapes generated code: this Python's bytecode tag and magic number (a pre-release shares the
    tag with its final release, not always the bytecode), Jinja's version and these source files."""
    import importlib.util

    import jinja2

    digest = hashlib.sha256(f"{sys.implementation.cache_tag}\0{jinja2.__version__}\0".encode()
                            + importlib.util.MAGIC_NUMBER)
    for module in sorted(modules):
        digest.update(str(module.name).encode() + b"\0" + module.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def cache_folder(kind: str, *modules: Path, create: bool = True) -> Path | None:
    """The subfolder for ``kind`` at the current key, made (mode 0700) if needed, or with ``create=False`` where it
    would be (``make_private`` makes it); None when there is no usable one."""
    root = cache_root()
    if root is None or not modules:    # no source to key on (an install without .py files): no way to tell stale
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
    """Owned by this user and writable by nobody else. Without POSIX owners (Windows), only a folder inside the
    user's own profile, whose ACLs keep others out: a cache folder set elsewhere (a share) is not used."""
    if not hasattr(os, "getuid"):
        try:
            return folder.resolve().is_relative_to(Path.home().resolve())
        except (RuntimeError, KeyError, OSError):
            return False
    info = folder.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_private_file(path: Path, limit: int) -> bytes | None:
    """The bytes of a cache file, read only if it is a regular file of this user's that nobody else can write, and
    not longer than ``limit``; checked on the open file itself (never by its name first and read after), without
    following a symbolic link. None otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        handle = os.open(path, flags)
    except OSError:
        return None
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
            return None
        with os.fdopen(handle, "rb", closefd=False) as stream:
            data = stream.read(limit + 1)
        return data if len(data) <= limit else None
    except OSError:
        return None
    finally:
        os.close(handle)


def _prune(root: Path, kind: str, keep: Path) -> None:
    """Keep the newest KEEP subfolders of this kind: each edit of a generating module makes a new one."""
    import shutil

    others = sorted((p for p in root.glob(f"{kind}-*") if p.is_dir() and p != keep),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)
