"""The lab: a simulated Exchange organisation served over real WSMan/PSRP (plus the Graph and HTTPS services others plug in).

It needs the libraries of the [lab] extra (pip install 'hma-check[lab]'); importing the package without them fails at
once, naming the missing one, rather than halfway through starting a lab.
"""

from importlib.util import find_spec

for _library in ("psrpcore", "trustme"):
    if find_spec(_library) is None:
        raise ModuleNotFoundError(f"No module named {_library!r} (the lab needs: pip install 'hma-check[lab]')",
                                  name=_library)
