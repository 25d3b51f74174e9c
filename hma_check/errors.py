"""The exception hierarchy: every error hma-check raises on purpose is an HmaCheckError; messages are one line that
names the file and the position. Classes defined elsewhere are listed with their module (tests/test_errors.py keeps
this tree and the code in step).

    HmaCheckError
     ├── InputError              bad input from the user: the CLI prints it and exits 2
     │    ├── EvidenceError      evidence.json malformed, truncated, too new or hostile
     │    │    └── ClixmlError   an Export-Clixml file (or a live object's CLIXML) malformed, oversized or hostile
     │    ├── ChecksError        a checks file fails validation (unknown key, bad expression, duplicate id...)
     │    ├── ExemptionsError    an exemptions file fails validation
     │    ├── ConfigError        a scan configuration file fails validation
     │    ├── ToolMissingError   a program an option needs is not installed (Chromium for --pdf)
     │    └── ImportPathError    (collect.offline.importer) the path to import cannot be read as a folder or zip
     ├── OutputError             an output could not be produced (Chromium printed no PDF): the CLI exits 4
     ├── SignatureError          (runs.signing) a signature does not verify or its signer is not the one expected
     ├── SigningError            (runs.signing) this certificate and key cannot sign (wrong pair, key usage...)
     ├── DerError                (runs.der) bytes that are not the DER a CMS signature must be (also a ValueError)
     ├── MissingFact             (evaluate.facts) a fact an expression needs was not collected: the finding is ERROR
     │    └── NotApplicable      (evaluate.facts) the source does not exist there by design: NOT_APPLICABLE
     ├── Undecidable             (evaluate.decide) an expression could not be decided: the finding is ERROR, with why
     ├── BudgetExceeded          (evaluate.budget) an expression went over its time, size or step budget: ERROR, with why
     ├── JsonError               (util.json_file) text that is not JSON these files can hold (also a ValueError)
     │
     │   Collection faults: each becomes the error text of the one source it concerns, never a crash.
     ├── KerberosFailure         (collect.kerberos) no ticket, a refused password, no KDC: one line, the section stops
     ├── LogFormatError          (collect.logs.httpproxy) a file that cannot be read as an HttpProxy log: malformed
     ├── CallFailed              (collect.psrp_client) one remote PowerShell call failed, classified (auth, timeout...)
     ├── ReadOnlyViolation       (collect.psrp_client) a cmdlet outside the read-only allowlist: a bug, never sent
     ├── ShapeError              (collect.exchange.objects) objects that cannot be the source's data (also a ValueError)
     ├── ApplicationHostError    (collect.iis_config) an applicationHost.config IIS would not read (also a ValueError)
     ├── CertificateError        (collect.certificates) RawData that is not a DER X.509 certificate (also a ValueError)
     ├── GraphQueryError         (collect.graph.collector) one Graph query failed; the message says what to do
     ├── Unreachable             (collect.probes.tls) the TCP connection to a probed node failed
     └── NotAttempted            (collect.probes.collector) a probe skipped after its node already failed
"""

from __future__ import annotations

from typing import Iterable


class HmaCheckError(Exception):
    """Base of every error hma-check raises on purpose."""


class InputError(HmaCheckError):
    """A file or option given by the user is not acceptable. ``str(err)`` is the whole, one-line explanation."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        # One line, always: a hostile value must not be able to forge extra output lines.
        super().__init__(one_line(where + message))


class EvidenceError(InputError):
    pass


class ClixmlError(EvidenceError):
    pass


class ChecksError(InputError):
    pass


class ExemptionsError(InputError):
    pass


class ConfigError(InputError):
    pass


class ToolMissingError(InputError):
    pass


class OutputError(HmaCheckError):
    """An output could not be produced although the input was fine; nothing of the run is written."""


def one_line(text: str, limit: int | None = 2000) -> str:
    """Collapse control characters so a message stays on one line, and bound its length (``None``: unbounded)."""
    flat = "".join(ch if ch.isprintable() else " " for ch in text)
    flat = " ".join(flat.split())
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """' (did you mean 'server'?)' for a misspelt name, '' when nothing known is close."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
