"""The YAML every input file goes through: aliases refused, a billion-laughs bomb included, before anything expands."""

from __future__ import annotations

import time

import pytest

from hma_check.errors import InputError
from hma_check.util import yaml_file
from hma_check.util.yaml_file import loads_yaml


def test_an_alias_bomb_is_refused_at_once_without_expanding():
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, 30):     # 9**30 strings if anything expanded it
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*{'a' if n == 1 else f'l{n - 1}'}"] * 9) + "]")
    started = time.perf_counter()
    with pytest.raises(InputError) as caught:
        loads_yaml("\n".join(lines) + "\n", source="bomb.yaml")
    assert time.perf_counter() - started < 2
    assert str(caught.value) == "bomb.yaml:2: YAML aliases (*name) are not allowed here"


@pytest.mark.parametrize("fast", [True, False])
def test_both_parsers_refuse_aliases_and_read_the_same_values(monkeypatch, fast):
    """LibYAML's parser and PyYAML's pure-Python one (an installation without libyaml) give the same events."""
    if not fast:
        monkeypatch.setattr(yaml_file, "_Parser", yaml_file._PyParser)
    text = "version: 1\nchecks:\n  - id: X\n    tags: &t [a]\n    more:\n      - b\n      - *t\n"
    with pytest.raises(InputError) as caught:
        loads_yaml(text, source="c.yaml")
    assert "aliases" in str(caught.value) and str(caught.value).startswith("c.yaml:")
    assert loads_yaml("a: [1, {b: c}]\n", source="ok.yaml") == {"a": [1, {"b": "c"}]}
