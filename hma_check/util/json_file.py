"""The one JSON reader for what hma-check is given (evidence, findings, manifests, imported and Graph JSON).

Stricter than json.loads where json.loads accepts what no writer of these files produces and a later step would
trip over: NaN, Infinity and numbers too large to be finite (an integer too long to convert is refused too); a key given twice (json.loads keeps the last one
silently, so two readers could disagree about the same file); a lone UTF-16 surrogate escape such as "\\ud800",
which no UTF-8 file can hold and which fails the moment the value is written out again.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hma_check.errors import HmaCheckError

# A \\uD800-\\uDBFF escape not followed by a \\uDC00-\\uDFFF one, or a low one not preceded by a high one; an escaped
# backslash before the 'u' (an even number of backslashes) makes it text, not an escape.
_LONE_SURROGATE = re.compile(
    r"(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\)(?:\\\\)*(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")   # the cheap test first: most files hold none at all


class JsonError(HmaCheckError, ValueError):
    """Why a text is not JSON these files can hold; ``line`` when a position is known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def loads_json(text: str) -> Any:
    """The document, or JsonError (a ValueError) with a one-line reason; RecursionError when nested too deeply."""
    # A backslash is found at memchr speed, the escape pattern scanned for at a few instructions a character: a
    # 999-user Graph page without one (the usual case) skips a 0.09 ms regex scan.
    if "\\" in text and _SURROGATE_ESCAPE.search(text):
        match = _LONE_SURROGATE.search(text)
        if match:
            escape = "\\" + match.group(0).lstrip("\\")
            raise JsonError(f"not valid JSON: a lone UTF-16 surrogate ({escape}) is not a character",
                            _line(text, match.start()))
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise JsonError(f"not valid JSON: {exc.msg}", exc.lineno) from None
    except JsonError:
        raise
    except ValueError as exc:
        # Python refuses to convert an integer of more than sys.get_int_max_str_digits() digits (4,300), a guard
        # against quadratic conversions: no writer of these files produces one
        raise JsonError(f"not valid JSON: {str(exc).split(';', 1)[0]}") from None


def loads_json_page(text: str) -> Any:
    """``loads_json(text)``, faster for an object whose arrays hold flat objects (a Graph page): the same document,
    the same errors, the same guarantees.

    The duplicate-key check is what makes loads_json slow there: a Python call per object (0.4 ms of a 999-user
    page's 1.3 ms). Here json.loads builds the objects in C without it, and the keys are proved unique by counting
    instead: without a backslash in the text no string holds an escape, so each string's colons are the colons of
    its value, and every other colon in the text separates one key from its value. The pairs in the text are then at
    most the text's colons less those inside the top-level keys and string values; the parsed document holds one
    pair fewer for every key given twice, and the pairs counted here (the top level and the objects in its arrays)
    are at most the document's. When the count reaches the bound, all three are equal: no key was given twice. A text
    the count cannot vouch for (an escape, a nested object, a colon in an item's value, a text that is not JSON) is
    read by loads_json, which then finds and reports what is wrong with it.
    """
    if "\\" not in text:   # memchr speed; an escape could hide a colon, a lone surrogate or a key's spelling
        try:
            document = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        except ValueError:   # not JSON, NaN, an endless number: loads_json says which, as it always has
            pass
        else:
            if _keys_proved_unique(text, document):
                return document
    return loads_json(text)


def _keys_proved_unique(text: str, document: Any) -> bool:
    """Whether the pairs of ``document`` (parsed from ``text``, which holds no backslash) are all the pairs of the
    text; see loads_json_page."""
    if type(document) is not dict:
        return False
    pairs = len(document)
    colons_in_strings = 0
    for key, value in document.items():
        colons_in_strings += key.count(":")
        kind = type(value)
        if kind is str:
            colons_in_strings += value.count(":")
        elif kind is list and value and set(map(type, value)) == {dict}:
            pairs += sum(map(len, value))
    return pairs == text.count(":") - colons_in_strings


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonError(f"not valid JSON: the key {key[:60]!r} is given twice in one object")
            seen.add(key)
    return document


def _refuse_constant(name: str) -> float:
    raise JsonError(f"not valid JSON: {name} is not a number these files can hold")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):   # 1e999 parses as infinity
        raise JsonError(f"not valid JSON: {text[:40]} is not a finite number")
    return value
