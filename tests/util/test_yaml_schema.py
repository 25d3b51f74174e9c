"""The one YAML schema reader: its checks and messages, positions from either kind of document, and that nothing else
in the product or the lab says "must be a mapping" or "must be true or false" on its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hma_check.errors import ConfigError
from hma_check.util.yaml_file import loads_yaml
from hma_check.util.yaml_schema import Schema, located
from hma_check.util.yaml_source import load_yaml_bytes

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = """\
name: lab
servers:
  - name: EX01
    enabled: yes
    port: 70000
  - fqdn: ex02.contoso.com
"""


def _error(call):
    with pytest.raises(ConfigError) as raised:
        call()
    return str(raised.value)


@pytest.mark.parametrize("read, message", [
    (lambda s, d: s.mapping(d, (), keys=["name"]), "f.yaml:2: servers: unknown key; expected one of: name"),
    (lambda s, d: s.mapping(d["servers"][1], ("servers", 1), required=["name"]),
     "f.yaml:6: servers[1]: missing required key 'name'"),
    (lambda s, d: s.mapping(d["servers"][0], ("servers", 0), keys=["name", "enabld", "port"]),
     "f.yaml:4: servers[0].enabled: unknown key (did you mean 'enabld'?); expected one of: name, enabld, port"),
    (lambda s, d: s.text(d["servers"][0]["enabled"], ("servers", 0, "enabled")),
     "f.yaml:4: servers[0].enabled: must be non-empty text (quote it: YAML reads on, off, yes and no as booleans)"),
    (lambda s, d: s.integer(d["servers"][0]["port"], ("servers", 0, "port"), 1, 65535),
     "f.yaml:5: servers[0].port: must be an integer from 1 to 65535"),
    (lambda s, d: s.one_of(d["name"], ("name",), ("ready", "enabled")), "f.yaml:1: name: must be one of: ready, enabled"),
    (lambda s, d: s.boolean(d["name"], ("name",)), "f.yaml:1: name: must be true or false"),
    (lambda s, d: s.list_of(d["name"], ("name",), what="servers", non_empty=True),
     "f.yaml:1: name: must be a non-empty list of servers"),
    (lambda s, d: s.texts(d["servers"], ("servers",)), "f.yaml:2: servers: must be a list of strings"),
])
def test_each_check_names_file_line_and_key_path_in_both_kinds_of_document(read, message):
    doc = load_yaml_bytes(DOCUMENT.encode(), "f.yaml", ConfigError)
    assert _error(lambda: read(Schema(doc.error), doc.data)) == message
    tree = loads_yaml(DOCUMENT, source="f.yaml", error=ConfigError)
    assert _error(lambda: read(Schema(located(tree, "f.yaml", ConfigError)), tree)) == message


def test_values_that_look_right_but_are_not_are_refused():
    schema = Schema(lambda where, message: ConfigError(message))
    for value in (1, 0, "true"):
        pytest.raises(ConfigError, schema.boolean, value, ())
    pytest.raises(ConfigError, schema.integer, True, (), 0, 5)       # a bool is not a number here
    pytest.raises(ConfigError, schema.number, float("nan"), (), 0, 5)
    pytest.raises(ConfigError, schema.one_of, True, (), (1, 2))       # nor 1
    pytest.raises(ConfigError, schema.text, "a\nb", (), one_line=True)
    pytest.raises(ConfigError, schema.text, "   ", ())
    assert schema.text("", (), empty=True) == "" and schema.mapping({"x-note": 1}, (), keys=[], extensions="x-")


def test_no_other_module_reimplements_the_readers_messages():
    """'One of each': these checks live in util/yaml_schema.py only (a module with its own wording drifts)."""
    pattern = re.compile(r"\"(must be a mapping|must be true or false|must be a list|unknown key)\b")
    offenders = [f"{path.relative_to(REPO)}:{number}" for package in ("hma_check", "hma_lab")
                 for path in sorted((REPO / package).rglob("*.py")) if path.name != "yaml_schema.py"
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, offenders
