"""XML text and attribute values escaped exactly as ElementTree's serialiser writes them: for junit.xml, and for
the WSMan envelopes the Exchange collector writes as pypsrp would (hma_check.collect.psrp_wire).

xml.sax.saxutils.escape does the same, but importing it imports urllib.request, http.client and email (16-40 ms)
into a report that needs none of them.
"""

from __future__ import annotations


def xml_text(text: str) -> str:
    """Element text: ``&``, ``<`` and ``>`` as references (``&`` first, so no reference is escaped twice)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xml_attribute(text: str) -> str:
    """An attribute value in double quotes: the quote, and line ends and tabs as character references, so they
    survive parsing (a parser turns a literal one into a space)."""
    return (xml_text(text).replace('"', "&quot;").replace("\r", "&#13;").replace("\n", "&#10;")
            .replace("\t", "&#09;"))
