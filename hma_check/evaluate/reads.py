"""Which properties a check's expressions read, so a finding's excerpt shows exactly what was tested.

While a ``Watch`` has a log, the item and the source data handed to expressions are ``TrackedDict`` views:
every key read (by an expression, ``item.IISAuthenticationMethods``, or by a filter written in Python, such as
``tls_state`` reading ``Protocols['TLS 1.2'].Server.Enabled``) is logged with its value. The excerpt keeps the
deepest reads only: ``bearer.client_id`` rather than the whole ``bearer``. Lists are not wrapped (a 50,000-user list
would cost more to watch than to evaluate): a short list of objects is watched element by element
(``exchange_certificates['EX01'][0].Thumbprint``); any other list read is logged whole, shortened when large.
"""

from __future__ import annotations

import json
from functools import cached_property, lru_cache
from typing import Any, Iterator

ABSENT = "(not in the evidence)"      # how the excerpt shows a property that was asked for and is not there
VALUE_LIMIT = 600                     # characters of JSON per value before it is summarised
WATCHED_LIST = 50                     # lists of objects up to this length are watched element by element
Path = tuple[Any, ...]


class Watch:
    """Where reads go: ``log`` is the dict of the phase being watched (a ``let``, the assertion, one conjunct of
    it), None when nothing is watched. Views keep a reference to the Watch, not to a log, so a value bound in a
    ``let`` and read again by the assertion is logged where it is read."""

    def __init__(self) -> None:
        self.log: dict[Path, Any] | None = None

    def read(self, path: Path, value: Any) -> Any:
        log = self.log
        if log is None:
            return value
        log.setdefault(path, value)
        return self._wrap(value, path)

    def _wrap(self, value: Any, path: Path) -> Any:
        if isinstance(value, dict):
            return TrackedDict(value, self, path)
        if isinstance(value, list) and len(value) <= WATCHED_LIST and any(isinstance(v, dict) for v in value):
            return TrackedList(value, self, path)
        return value

    def absent(self, path: Path) -> None:
        if self.log is not None:
            self.log.setdefault(path, ABSENT)

    def root(self, label: str, value: Any) -> Any:
        """Source data as expressions should see it while a log is active: a watched view of a mapping, else the
        value itself, logged whole (a list, a scalar)."""
        if self.log is None:
            return value
        self.log.setdefault((label,), value)
        return self._wrap(value, (label,))

    def used_as_key(self, key: Any) -> None:
        """The value just read was only a lookup key (``os.tls_registry[item.Name]``): it was not tested, and the
        excerpt is clearer without it."""
        log = self.log
        if log:
            last = next(reversed(log))
            if isinstance(log[last], str) and str(log[last]).lower() == str(key).lower():
                del log[last]

    def view(self, value: Any) -> Any:
        """The item a check evaluates, watched for as long as it is used (its paths start at its properties)."""
        return TrackedDict(value, self, ()) if isinstance(value, dict) else value


def leaves(log: dict[Path, Any]) -> Iterator[tuple[Path, Any]]:
    """Every read that no deeper read explains (reading ``a.b`` makes ``a`` an intermediate step)."""
    inner = prefixes(log)
    for path, value in log.items():
        if path and path not in inner:
            yield path, value


class SavedLog(dict):
    """The log of a ``let`` evaluated once for every item (hma_check.evaluate.lets): each item's excerpt reads it
    again, so its leaves, their index and its intermediate paths are worked out once. HMA-AUTH-011 looks for the
    current Auth certificate among every server's certificates: 40,000 reads at 200 servers, which merging and
    sorting again for each of the 200 excerpts made the costliest part of the evaluation. Never changed once saved."""

    @cached_property
    def leaves(self) -> list[tuple[Path, Any]]:
        return list(leaves(self))

    @cached_property
    def leaf_paths(self) -> frozenset[Path]:
        return frozenset(path for path, _ in self.leaves)

    @cached_property
    def paths(self) -> frozenset[Path]:
        return frozenset(self)

    @cached_property
    def inner(self) -> frozenset[Path]:
        """The paths that are a step towards a deeper read in this log."""
        return frozenset(prefixes(self))


def prefixes(paths: Any) -> set[Path]:
    """Every proper prefix of every path: the steps on the way to a deeper read, as a set built in one comprehension
    (every excerpt asks; a generator resumed once per prefix cost more)."""
    return {path[:length] for path in paths for length in range(1, len(path))}


class TrackedDict(dict):
    """A copy of an evidence mapping that logs every key read through its Watch (nested mappings are wrapped on
    read). A dict subclass, so filters that test isinstance(value, dict) and the sandbox see the evidence as is."""

    __slots__ = ("_watch", "_path")

    def __init__(self, data: dict[Any, Any], watch: Watch, path: Path) -> None:
        super().__init__(data)
        self._watch = watch
        self._path = path

    def __getitem__(self, key: Any) -> Any:
        try:
            value = dict.__getitem__(self, key)
        except KeyError:
            self._watch.absent(self._path + (key,))
            raise
        return self._watch.read(self._path + (key,), value)

    def get(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self[key]
        self._watch.absent(self._path + (key,))
        return default


class TrackedList(list):
    """A short list of evidence objects whose elements are watched as ``path[index]``."""

    __slots__ = ("_watch", "_path")

    def __init__(self, data: list[Any], watch: Watch, path: Path) -> None:
        super().__init__(data)
        self._watch = watch
        self._path = path

    def __iter__(self) -> Iterator[Any]:
        for index, value in enumerate(list.__iter__(self)):
            yield self._watch.read(self._path + (index,), value) if isinstance(value, dict) else value

    def __getitem__(self, index: Any) -> Any:
        value = list.__getitem__(self, index)
        if isinstance(index, int) and isinstance(value, dict):
            return self._watch.read(self._path + (index if index >= 0 else len(self) + index,), value)
        return value


@lru_cache(maxsize=1 << 15)     # a 200-server evaluation reads ~7,000 distinct paths, each in many excerpts
def path_text(path: Path) -> str:
    """``Protocols['TLS 1.2'].Server.Enabled``: the path as the expression language writes it."""
    text = ""
    for index, part in enumerate(path):
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        part = str(part)
        if index == 0 and not part.startswith("["):
            text += part
        elif part.isascii() and part.isidentifier():    # [A-Za-z_][A-Za-z0-9_]*, without a regular expression
            text += "." + part
        else:
            text += "['" + part.replace("'", "\\'") + "']"
    return text


_JSON = json.JSONEncoder(ensure_ascii=False, default=str)     # made once: json.dumps with options makes one a call


def shown_value(value: Any) -> tuple[Any, int]:
    """The value as the excerpt holds it (itself, or a summary when its JSON is longer than VALUE_LIMIT), and about
    how long it is as JSON (exact enough for the excerpt's budget)."""
    if value is ABSENT or isinstance(value, (bool, int, float)) or value is None:
        return value, (len(value) + 2 if value is ABSENT else 8)
    if isinstance(value, str):
        shown = value if len(value) <= VALUE_LIMIT else value[:VALUE_LIMIT] + "…"
        return shown, len(shown) + 2
    if isinstance(value, list) and len(value) <= 20 and all(isinstance(v, str) and len(v) < 30 for v in value):
        return list(value), _json_size(value)
    if isinstance(value, (list, tuple, set, frozenset)) and len(value) > VALUE_LIMIT // 2:
        return _summary(f"(list of {len(value)} items)")  # too long to show, whatever its items: not even measured
    if isinstance(value, dict) and len(value) > VALUE_LIMIT // 2:
        return _summary(f"(object with {len(value)} properties)")
    # JSON needs at least 3 characters an item ('1, ') and 7 a property ('"": 1, '): longer than the limit
    # whatever the items, so not serialised only to be summarised (the 200 servers HMA-AUTH-014 reads, 200 times)
    if isinstance(value, (list, tuple)) and 3 * len(value) > VALUE_LIMIT:
        return _summary(f"(list of {len(value)} items)")
    if isinstance(value, dict) and 7 * len(value) > VALUE_LIMIT:
        return _summary(f"(object with {len(value)} properties)")
    text = _JSON.encode(value)
    if len(text) <= VALUE_LIMIT:
        shown = json.loads(text)    # plain JSON types: a TrackedDict or a tuple becomes what findings.json holds
        # its JSON is the text again, but for the estimate _json_size makes of a list of texts
        return shown, (_json_size(shown) if isinstance(shown, (list, str)) or shown is None
                       or isinstance(shown, (bool, int, float)) else len(text))
    if isinstance(value, (list, tuple)):
        return _summary(f"(list of {len(value)} items)")
    if isinstance(value, dict):
        return _summary(f"(object with {len(value)} properties)")
    return _summary(text[:VALUE_LIMIT] + "…")


def _summary(text: str) -> tuple[str, int]:
    return text, len(text) + 2


def _json_size(value: Any) -> int:
    """About how long the value is as JSON (exact enough for a budget; serialising every value cost a tenth of
    the evaluation)."""
    if isinstance(value, str):
        return len(value) + 2
    if value is None or isinstance(value, (bool, int, float)):
        return 8
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return sum(len(v) + 4 for v in value) + 2
    return len(_JSON.encode(value))
