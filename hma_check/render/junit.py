"""junit.xml for pipelines: one testsuite per area, one testcase per finding.

FAIL is a failure and ERROR an error (the check could not be decided); NOT_APPLICABLE and EXEMPT are skipped with
their reason; WARN and NOTE pass but say so in system-out, since JUnit has no warning state (a NOTE is an info
check's result: never a failure, never part of the verdict).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from hma_check.contract.findings import ERROR, EXEMPT, FAIL, NOT_APPLICABLE, NOTE, WARN
from hma_check.render.model import Report


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
    return (_NOT_XML_ASCII if text.isascii() else _NOT_XML).sub("\ufffd", text)


def render(report: Report) -> bytes:
    suites = ET.Element("testsuites", name="hma-check", tests=str(len(report.findings)),
                        failures=str(report.counts[FAIL]), errors=str(report.counts[ERROR]))
    for area in report.areas:
        suite = ET.SubElement(suites, "testsuite", name=_clean(area.title), tests=str(len(area.findings)),
                              failures=str(area.counts[FAIL]), errors=str(area.counts[ERROR]),
                              skipped=str(area.counts[NOT_APPLICABLE] + area.counts[EXEMPT]))
        for finding in area.findings:
            case = ET.SubElement(suite, "testcase", classname=_clean(f"hma-check.{area.id}.{finding.check_id}"),
                                 name=_clean(f"{finding.check_id} {finding.title} [{finding.subject}]"))
            if finding.status == FAIL:
                node = ET.SubElement(case, "failure", message=_clean(finding.actual), type=finding.severity)
                node.text = _clean(f"expected: {finding.expected}\nactual: {finding.actual}\nwhy: {finding.why}")
            elif finding.status == ERROR:
                node = ET.SubElement(case, "error", message=_clean(finding.reason), type="could-not-evaluate")
                node.text = _clean(finding.reason)
            elif finding.status == NOT_APPLICABLE:
                ET.SubElement(case, "skipped", message=_clean(finding.reason))
            elif finding.status == EXEMPT:
                exemption = finding.exemption or {}
                ET.SubElement(case, "skipped", message=_clean(
                    f"exempt ({finding.original_status}): {exemption.get('reason')} - approved by "
                    f"{exemption.get('approved_by')} until {exemption.get('expires')}"))
            elif finding.status in (WARN, NOTE):
                ET.SubElement(case, "system-out").text = _clean(f"{finding.status} ({finding.severity}): {finding.actual}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"
