"""junit.xml for pipelines: one testsuite per area, one testcase per finding.

FAIL is a failure and ERROR an error (the check could not be decided); NOT_APPLICABLE and EXEMPT are skipped with
their reason; WARN passes but says so in system-out, since JUnit has no warning state.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hma_check.contract.findings import ERROR, EXEMPT, FAIL, NOT_APPLICABLE, WARN
from hma_check.render.model import Report


def _clean(text: str | None) -> str:
    """XML 1.0 cannot carry most control characters; drop them rather than write an unreadable file."""
    return "".join(ch for ch in (text or "") if ch in "\t\n\r" or ord(ch) >= 0x20)


def render(report: Report) -> bytes:
    suites = ET.Element("testsuites", name="hma-check", tests=str(len(report.findings)),
                        failures=str(report.counts[FAIL]), errors=str(report.counts[ERROR]))
    for area in report.areas:
        suite = ET.SubElement(suites, "testsuite", name=_clean(area.title), tests=str(len(area.findings)),
                              failures=str(area.counts[FAIL]), errors=str(area.counts[ERROR]),
                              skipped=str(area.counts[NOT_APPLICABLE] + area.counts[EXEMPT]))
        for finding in area.findings:
            case = ET.SubElement(suite, "testcase", classname=f"hma-check.{area.id}.{finding.check_id}",
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
            elif finding.status == WARN:
                ET.SubElement(case, "system-out").text = _clean(f"WARN ({finding.severity}): {finding.actual}")
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"
