"""The Jinja2 environment for report templates (templates/): autoescaped HTML, explicit escaping elsewhere."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined
from jinja2.bccache import Bucket
from markupsafe import Markup

from hma_check.errors import one_line
from hma_check.util.code_cache import cache_folder, open_private_file
from hma_check.util.resources import templates_dir

# Characters that can start markup, a link, HTML or break a table cell; parentheses, '#' and '+' are harmless
# mid-line and escaping them would only make the raw Markdown harder to read.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~])")


def md(value: Any) -> str:
    """Text for a Markdown table cell or paragraph: one line, Markdown and HTML characters escaped."""
    text = " ".join(str(value if value is not None else "").split())
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """Inline code for a Markdown table cell: one line, a backtick cannot end it and a pipe cannot end the cell."""
    text = " ".join(str(value if value is not None else "").split())
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def ps_comment(value: Any) -> str:
    """Text that stays inside a one-line PowerShell # comment (control characters cannot end the line)."""
    return one_line(str(value if value is not None else ""), limit=None)


def fenced(text: Any, language: str = "") -> str:
    """A Markdown code block whose fence is longer than any run of backticks inside, so content cannot close it."""
    body = str(text)
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{body}\n{fence}"


def css_string(value: Any) -> Markup:
    """A quoted CSS string for a <style> block: anything but ASCII letters and digits becomes a six-digit CSS escape,
    so no value can end the string, the rule or the style element. Spaces too: CSS swallows one whitespace after
    an escape, so a literal space there would vanish."""
    text = "".join(ch if ch.isascii() and ch.isalnum() else f"\\{ord(ch):06x}" for ch in str(value))
    return Markup(f'"{text}"')


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False, default=str, sort_keys=True)


def when(value: Any) -> str:
    """An evidence timestamp for people: '2026-11-20 09:00:00 UTC' (to the second; the evidence keeps the rest)."""
    from hma_check.contract.snapshot import parse_utc

    if not value:
        return "unknown"
    try:
        return parse_utc(str(value)).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, TypeError):
        return str(value)


def shown(value: Any) -> str:
    """An excerpt value in a table cell: text as is, a list as 'a, b', anything else as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return ", ".join(map(str, value)) if value else "(empty list)"
    return json.dumps(value, ensure_ascii=False, default=str)


STATUS_CLASS = {"PASS": "pass", "FAIL": "fail", "WARN": "warn", "ERROR": "error", "NOT_APPLICABLE": "na",
                "EXEMPT": "exempt", "NOTE": "note"}
STATUS_LABEL = {"NOT_APPLICABLE": "N/A"}


MAX_TEMPLATE_BYTES = 16 * 1024 * 1024    # the report template's compiled code is well under 1 MB


class QuietBytecodeCache(FileSystemBytecodeCache):
    """Jinja's bytecode cache, except that a cache file that cannot be read or written is no cache: never a
    failed report (hma_check.util.code_cache)."""

    def load_bytecode(self, bucket: Bucket) -> None:
        # read as the catalogue's store is: only a regular file of this user's that nobody else can write, checked
        # on the open file (the cached code is run); anything else, or a damaged file, compiles the template
        data = open_private_file(Path(self._get_cache_filename(bucket)), MAX_TEMPLATE_BYTES)
        if data is None:
            return
        try:
            bucket.bytecode_from_string(data)
        except Exception:  # noqa: BLE001 - a damaged file: compile the template instead
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


@lru_cache(maxsize=1)
def environment() -> Environment:
    # compiled templates kept between runs (hma_check.util.code_cache); Jinja checks each against its source
    folder = cache_folder("templates", Path(__file__).resolve())
    env = Environment(
        loader=FileSystemLoader(str(templates_dir())),
        bytecode_cache=QuietBytecodeCache(str(folder)) if folder is not None else None,
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters.update(md=md, ps_comment=ps_comment, pretty_json=pretty_json, fenced=fenced, css_string=css_string,
                       when=when, shown=shown, md_code=md_code,
                       status_class=lambda s: STATUS_CLASS.get(s, "na"),
                       status_label=lambda s: STATUS_LABEL.get(s, s))
    return env


def render_template(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)
