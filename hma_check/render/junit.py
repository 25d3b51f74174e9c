"""junit.xml for pipelines: one testsuite per area, one testcase per finding.

FAIL is a failure and ERROR an error (the check could not be decided); NOT_APPLICABLE and EXEMPT are skipped with
their reason; WARN and NOTE pass but say so in system-out, since JUnit has no warning state (a NOTE is an info
check's result: never a failure, never part of the verdict).
"""

from __future__ import annotations

import re
from typing import Any

from hma_check.contract.findings import ERROR, EXEMPT, FAIL, NOT_APPLICABLE, NOTE, WARN
from hma_check.render.model import Report
from hma_check.util.xml_escape import xml_attribute, xml_text


# What XML 1.0 cannot carry (its Char production: C0 controls but tab and line ends, surrogates, U+FFFE and U+FFFF) and
# what it tells documents to avoid (C1 controls, the noncharacters U+FDD0..U+FDEF and U+xFFFE/U+xFFFF of every
# plane): a value from the evidence holding any of them becomes U+FFFD, so every JUnit reader can parse the file.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
                      + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(1, 17))
                      + "]")


# The same class for ASCII text, which is nearly all of it: sre tests a class holding characters beyond the BMP an
# order of magnitude slower per character (50 against 3 microseconds for a finding's 300 characters).
_NOT_XML_ASCII = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str | None) -> str:
    if not text:
        return ""
    if text.isascii():
        # printable ASCII (most names and subjects) holds nothing to replace: two C scans instead of a regex's
        return text if text.isprintable() else _NOT_XML_ASCII.sub("\ufffd", text)
    return _NOT_XML.sub("\ufffd", text)


def render(report: Report) -> bytes:
    """The document ElementTree writes for these elements (ET.indent, then tostring with the XML declaration), built
    as text: a report of 200 servers has 5,000 test cases, and building and writing the tree cost more than
    everything else here (tests/render/test_render.py holds the two byte for byte)."""
    suites = [_parent("testsuite", [_case(area.id, finding) for finding in area.findings], 1,
                      name=_clean(area.title), tests=str(len(area.findings)), failures=str(area.counts[FAIL]),
                      errors=str(area.counts[ERROR]), skipped=str(area.counts[NOT_APPLICABLE] + area.counts[EXEMPT]))
              for area in report.areas]
    root = _parent("testsuites", suites, 0, name="hma-check", tests=str(len(report.findings)),
                   failures=str(report.counts[FAIL]), errors=str(report.counts[ERROR]))
    return ("<?xml version='1.0' encoding='utf-8'?>\n" + root + "\n").encode("utf-8")


def _case(area_id: str, finding: Any) -> str:
    if finding.status == FAIL:
        detail = [_leaf("failure", _clean(f"expected: {finding.expected}\nactual: {finding.actual}\nwhy: {finding.why}"),
                        message=_clean(finding.actual), type=finding.severity)]
    elif finding.status == ERROR:
        detail = [_leaf("error", _clean(finding.reason), message=_clean(finding.reason), type="could-not-evaluate")]
    elif finding.status == NOT_APPLICABLE:
        detail = [_leaf("skipped", "", message=_clean(finding.reason))]
    elif finding.status == EXEMPT:
        exemption = finding.exemption or {}
        detail = [_leaf("skipped", "", message=_clean(
            f"exempt ({finding.original_status}): {exemption.get('reason')} - approved by "
            f"{exemption.get('approved_by')} until {exemption.get('expires')}"))]
    elif finding.status in (WARN, NOTE):
        detail = [_leaf("system-out", _clean(f"{finding.status} ({finding.severity}): {finding.actual}"))]
    else:
        detail = []
    return _parent("testcase", detail, 2, classname=_clean(f"hma-check.{area_id}.{finding.check_id}"),
                   name=_clean(f"{finding.check_id} {finding.title} [{finding.subject}]"))


def _parent(tag: str, children: list[str], level: int, **attributes: str) -> str:
    """An element and its children, indented as ET.indent does (two spaces a level); without children, empty."""
    start = _start(tag, attributes)
    if not children:
        return start + " />"
    inner = "\n" + "  " * (level + 1)
    return f"{start}>{inner}{inner.join(children)}\n{'  ' * level}</{tag}>"


def _leaf(tag: str, text: str, **attributes: str) -> str:
    start = _start(tag, attributes)
    return f"{start}>{xml_text(text)}</{tag}>" if text else start + " />"


def _start(tag: str, attributes: dict[str, str]) -> str:
    return f"<{tag}" + "".join(f' {name}="{xml_attribute(value)}"' for name, value in attributes.items())
