"""The one way hma-check reads an input file: at most ``limit`` bytes, whatever the file claims to be.

A size from stat() proves nothing: /dev/zero, a FIFO or a file that grows while it is read report a size of 0 or
less than they hold. So the bytes read are counted, and reading stops one byte past the limit.
"""

from __future__ import annotations

from pathlib import Path

from hma_check.errors import InputError



def read_limited(path: str | Path, limit: int, *, error: type[InputError] = InputError, what: str = "file") -> bytes:
    """The file's bytes; ``error`` (one line naming the file) when it cannot be read or holds more than ``limit``."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            payload = handle.read(limit + 1)
    except IsADirectoryError:
        raise error(f"is a folder, not a {what}", path=str(path)) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
    if len(payload) > limit:
        raise error(f"larger than the limit for a {what} ({limit} bytes); not read further", path=str(path))
    return payload
