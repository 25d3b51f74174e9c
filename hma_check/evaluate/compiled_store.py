"""The compiled catalogue kept between runs (hma_check.util.code_cache): for each expression and template that
loaded without a problem, what loading worked out (the sources and names it reads, its plain lookup) and its code.

Parsing, checking and compiling the ~300 distinct expressions of checks.yaml costs about 0.4 s of every run;
reading them back costs a few milliseconds. Only what passed every check of the loader is kept, keyed by its exact
text, so a refused expression is refused again. The store is written once a report is complete (``save``), never
when an input was refused.
"""

from __future__ import annotations

import marshal
import os
import tempfile
from pathlib import Path
from types import CodeType
from typing import Any

from hma_check.util.code_cache import cache_folder, make_private, open_private_file

STORE_NAME = "compiled.marshal"
MAX_ENTRIES = 20_000            # a catalogue is ~300; users' own checks files add theirs
MAX_BYTES = 64 * 1024 * 1024

Key = tuple[str, bool, bool]     # (source text, is a template, is a PowerShell template)
Entry = tuple[frozenset[str], frozenset[str], "tuple[str, ...] | None", CodeType]


def _generating_modules() -> list[Path]:
    """The code that decides what an expression compiles to and what loading accepts."""
    package = Path(__file__).resolve().parent.parent
    return sorted([*(package / "evaluate").rglob("*.py"), *(package / "contract").glob("*.py")])


class Store:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.entries: dict[Key, Entry] = self._read() if folder is not None else {}
        self.new: dict[Key, Entry] = {}

    def get(self, key: Key) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: Key, entry: Entry) -> None:
        if self.folder is not None:
            self.new[key] = entry

    def save(self) -> None:
        """Write what this process compiled to the store (atomically: another run may read it at the same time)."""
        if self.folder is None or not self.new:
            return
        merged = {**self.entries, **self.new} if len(self.entries) + len(self.new) <= MAX_ENTRIES else self.new
        if make_private(self.folder) is None:
            return
        try:
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".compiled-")
            try:
                with os.fdopen(handle, "wb") as out:
                    marshal.dump(merged, out)
                os.replace(temporary, self.folder / STORE_NAME)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            return       # a cache that cannot be written is no cache, never a failed run
        self.entries, self.new = merged, {}

    def _read(self) -> dict[Key, Entry]:
        assert self.folder is not None
        data = open_private_file(self.folder / STORE_NAME, MAX_BYTES)
        if data is None:
            return {}
        try:
            loaded = marshal.loads(data)
        except Exception:  # noqa: BLE001 - any damage (truncated, a huge length field) is no store, never a failure
            return {}
        return loaded if _well_formed(loaded) else {}


def _well_formed(loaded: Any) -> bool:
    return isinstance(loaded, dict) and all(
        isinstance(key, tuple) and len(key) == 3 and isinstance(key[0], str)
        and isinstance(value, tuple) and len(value) == 4 and isinstance(value[0], frozenset)
        and isinstance(value[1], frozenset) and (value[2] is None or isinstance(value[2], tuple))
        and isinstance(value[3], CodeType)
        for key, value in loaded.items())


_STORE: Store | None = None


def store() -> Store:
    """This process's store, read on first use."""
    global _STORE
    if _STORE is None:
        _STORE = Store(cache_folder("catalogue", *_generating_modules(), create=False))
    return _STORE


def save() -> None:
    if _STORE is not None:
        _STORE.save()
