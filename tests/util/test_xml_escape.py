"""hma_check.util.xml_escape against the standard library's escaping, which it replaces on the report path."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from hypothesis import given, strategies as st

from hma_check.util.xml_escape import xml_attribute, xml_text

# the characters escaping is about, often, among any others
TEXT = st.text(alphabet=st.one_of(st.sampled_from('&<>"\'\r\n\t;#x'), st.characters()), max_size=40)


@given(TEXT)
def test_text_is_escaped_as_saxutils_does(text):
    assert xml_text(text) == escape(text)


@given(TEXT)
def test_attribute_is_escaped_as_elementtree_writes_it(text):
    written = ET.tostring(ET.Element("a", v=text), encoding="unicode")
    assert written == f'<a v="{xml_attribute(text)}" />'


def test_references_are_not_escaped_twice():
    assert xml_text("&lt;a&gt; & b") == "&amp;lt;a&amp;gt; &amp; b"
    assert xml_attribute('say "&quot;"\n') == "say &quot;&amp;quot;&quot;&#10;"


def test_its_users_import_no_network_module():
    """The reason it exists: xml.sax.saxutils imports urllib.request, http.client and email, which a report (junit)
    never needs."""
    code = ("import sys, hma_check.render.junit, hma_check.collect.psrp_wire; "
            "print(sorted({'urllib.request', 'http.client', 'email'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
