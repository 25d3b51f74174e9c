"""Write files so that a failure never leaves a half-written one behind, and never outside the output folder.

Every failure to write (a folder that cannot be created, a path under a file, no permission, a full disk) is an
OutputError: one line naming the file, exit code 4.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path, PurePosixPath

from hma_check.errors import OutputError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write to a temporary file in the same directory, flush it to disk, then rename it over ``path``.

    Renaming over a symbolic link replaces the link, never the file it points to.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def make_folder(folder: Path) -> None:
    """Create the output folder (and its parents); OutputError when it cannot be one."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder: {exc.strerror or exc}") from None


def check_folder(folder: Path) -> None:
    """OutputError now when ``folder`` cannot become the output folder (a path under a file, no permission); creates
    nothing, so a command that fails later for another reason leaves no trace."""
    path = Path(folder).absolute()
    for candidate in (path, *path.parents):
        if os.path.exists(candidate):
            if not os.path.isdir(candidate):
                raise OutputError(f"{folder}: cannot create the output folder: {candidate} is not a folder")
            if not os.access(candidate, os.W_OK | os.X_OK):
                raise OutputError(f"{folder}: cannot create the output folder: no permission to write in {candidate}")
            return


def inside(folder: Path, relative: str) -> Path | None:
    """``folder/relative`` when it really lies inside ``folder``, else None.

    Really inside: a relative path without '..', no component below ``folder`` a symbolic link (a link named
    'inputs' pointing elsewhere would carry a write or a delete out of the folder), and the resolved path still under
    the resolved folder. The last component is checked too: a link in the folder is never followed.
    """
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or any(part in ("..", ".", "") for part in pure.parts):
        return None
    root = Path(folder).resolve()
    path = root
    for part in pure.parts:
        path = path / part
        if os.path.islink(path):   # os.path: False, not an exception, for a name too long to exist
            return None
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return None
    return path


def write_inside(folder: Path, relative: str, payload: bytes) -> None:
    """write_bytes_atomic of ``folder/relative``, refused (OutputError) when a folder on the way leads out of it."""
    parent_relative = str(PurePosixPath(relative).parent)
    parent = Path(folder).resolve() if parent_relative == "." else inside(folder, parent_relative)
    if parent is None:
        raise OutputError(f"{Path(folder) / relative}: not written: a folder on the way is a symbolic link, and "
                          "hma-check writes only inside the output folder")
    write_bytes_atomic(parent / PurePosixPath(relative).name, payload)


def remove_inside(folder: Path, relative: str) -> bool:
    """Delete ``folder/relative`` only when it is a regular file really inside ``folder`` (see inside()); anything
    else (a directory, a link, a device, a path leading out of the folder) is left alone. True when removed."""
    path = inside(folder, relative)
    if path is None:
        return False
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False
    except OSError:   # not there, or a component is not a folder ('report.html/x'): nothing to remove
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise OutputError(f"{path}: cannot remove the previous run's file: {exc.strerror or exc}") from None
    return True
