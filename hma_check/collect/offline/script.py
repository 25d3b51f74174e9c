"""The offline collection script customers run in the Exchange Management Shell, rendered from its template."""

from __future__ import annotations

import re
from pathlib import Path

from hma_check import __version__

TEMPLATE = Path(__file__).with_name("Collect-HmaReadiness.ps1")
_GRAPH_REGION = re.compile(r"^#region graph\n.*?^#endregion graph\n", re.S | re.M)


def collector_script(*, graph: bool = False) -> str:
    """The script text: the template with this version stamped in, and the Graph part only when asked for."""
    text = TEMPLATE.read_text(encoding="ascii").replace("__HMA_CHECK_VERSION__", __version__)
    if not graph:
        text = _GRAPH_REGION.sub("", text)
    # Windows PowerShell 5.1 reads a .ps1 without a BOM in the ANSI code page: the script stays ASCII, CRLF.
    return text.replace("\r\n", "\n").replace("\n", "\r\n")
