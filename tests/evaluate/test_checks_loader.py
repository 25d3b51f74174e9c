"""checks.yaml validation: every mistake fails loading with the file, the line and the check id, in one line."""

from __future__ import annotations

import textwrap

import pytest

from tests.support.common import SITE_CHECKS
from hma_check.evaluate.checks import load_checks
from hma_check.errors import ChecksError
from hma_check.util.resources import checks_file

GOOD = SITE_CHECKS


def write(tmp_path, text, name="site.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(paths):
    with pytest.raises(ChecksError) as info:
        load_checks(paths)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_good_file_loads(tmp_path):
    loaded = load_checks([write(tmp_path, GOOD)])
    assert [c.id for c in loaded.checks] == ["SITE-ORG-001"]
    assert loaded.files[0]["sha256"] and len(loaded.files[0]["sha256"]) == 64


@pytest.mark.parametrize("change,line,fragment", [
    (("    assert:", "    asert:"), 8, "unknown key 'asert' (did you mean 'assert'?)"),
    (("    why: because\n", ""), 3, "missing required key 'why'"),
    (('"exchange.organization_config.MapiHttpEnabled is true"', '"exchange.organization_config.MapiHttpEnabled is ("'),
     8, "'assert' does not compile"),
    (("exchange.organization_config.MapiHttpEnabled is true", "exchange.organisation_config.MapiHttpEnabled is true"),
     8, "unknown source exchange.organisation_config (did you mean exchange.organization_config?)"),
    (("requires: [exchange.organization_config]", "requires: []"), 7, "does not list it in 'requires'"),
    (("severity: blocker", "severity: critical"), 6, "'severity' must be one of blocker, warning, info"),
    (("references: [https://learn.microsoft.com/x]", "references: []"), 12, "'references'"),
    (("id: SITE-ORG-001", "id: site-org-1"), 3, "must look like HMA-AREA-001"),
])
def test_each_mistake_names_file_line_and_check(tmp_path, change, line, fragment):
    path = write(tmp_path, GOOD.replace(*change))
    text = error_of([path])
    assert fragment in text
    assert text.startswith(f"{path}:{line}:")
    if "must look like" not in fragment:
        assert "check SITE-ORG-001" in text


def test_duplicate_ids_across_files_name_both_places(tmp_path):
    first, second = write(tmp_path, GOOD, "a.yaml"), write(tmp_path, GOOD, "b.yaml")
    text = error_of([first, second])
    assert "duplicate id" in text and str(first) in text and str(second) in text


def test_a_user_file_cannot_reuse_a_shipped_id(tmp_path):
    text = error_of([checks_file(), write(tmp_path, GOOD.replace("SITE-ORG-001", "HMA-ORG-001"))])
    assert "HMA-ORG-001: duplicate id" in text


def test_powershell_interpolation_must_be_quoted(tmp_path):
    body = GOOD + textwrap.indent(textwrap.dedent("""\
        enable: |-
          Set-OrganizationConfig -Identity {{ exchange.organization_config.Name }}
        phase: 1
        """), "    ")
    text = error_of([write(tmp_path, body)])
    assert "'enable' interpolates exchange.organization_config.Name without ps_quote" in text


def test_yaml_aliases_and_duplicate_keys_are_refused(tmp_path):
    aliased = GOOD.replace("    expect: enabled", "    expect: &e enabled\n    tags: [*e]")
    assert "aliases" in error_of([write(tmp_path, aliased)])
    duplicated = GOOD.replace("    expect: enabled", "    expect: enabled\n    expect: disabled")
    assert "duplicate key 'expect'" in error_of([write(tmp_path, duplicated)])


def test_unreadable_and_malformed_files(tmp_path):
    assert "cannot read" in error_of([tmp_path / "missing.yaml"])
    assert "YAML syntax" in error_of([write(tmp_path, "version: 1\nchecks: [\n")])
    assert "a checks file is a mapping" in error_of([write(tmp_path, "- just a list\n")])
    assert "unsupported checks file version" in error_of([write(tmp_path, GOOD.replace("version: 1", "version: 7"))])


def test_a_yaml_boolean_where_text_belongs_explains_itself(tmp_path):
    assert "YAML reads on, off, yes and no as booleans" in error_of([write(tmp_path, GOOD.replace("expect: enabled", "expect: on"))])


def test_yaml_keys_are_literal_text(tmp_path):
    """'off:' is a let name, not the YAML 1.1 boolean false."""
    body = GOOD.replace('    assert: "exchange.organization_config.MapiHttpEnabled is true"',
                        '    let:\n      off: "exchange.organization_config.MapiHttpEnabled"\n    assert: "off is true"')
    loaded = load_checks([write(tmp_path, body)])
    assert loaded.checks[0].let[0][0] == "off"


def test_the_shipped_catalogue_loads_and_every_check_cites_microsoft_or_css_exchange():
    loaded = load_checks([checks_file()])
    assert len(loaded.checks) >= 60
    for check in loaded.checks:
        assert any(r.startswith(("https://learn.microsoft.com/", "https://microsoft.github.io/CSS-Exchange/",
                                 "https://msrc.microsoft.com/")) for r in check.references), check.id
        if check.enable is not None:
            assert check.phase in (1, 2, 3)
