"""What every hostile-input test asserts about the command line: an exit code the command documents, never a
Python traceback, one error line naming the file (and line), bounded time, nothing half-written."""

from __future__ import annotations

import signal
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from click.testing import CliRunner, Result

from hma_check.cli import cli

# The exit codes each command documents (hma-check <command> --help).
EXIT_CODES = {"report": {0, 1, 2, 3, 4}, "import": {0, 1, 2, 3, 4}, "scan": {0, 1, 2, 3, 4}, "demo": {0, 1, 2, 3, 4},
              "checks": {0, 2}, "diff": {0, 1, 2, 4}, "verify": {0, 1, 2, 3}, "sign": {0, 1, 2, 4}, "lab": {0, 2}}


def invoke(*args: object, codes: set[int] | None = None, seconds: float = 60) -> Result:
    """Run hma-check in-process; fail the test on a traceback, an undocumented exit code or a run over ``seconds``."""
    argv = [str(a) for a in args]
    with deadline(seconds):
        result = CliRunner().invoke(cli, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        detail = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else repr(result.exception)
        raise AssertionError(f"hma-check {' '.join(argv)} ended in a traceback:\n{detail}")
    allowed = codes if codes is not None else EXIT_CODES[argv[0]]
    assert result.exit_code in allowed, (result.exit_code, result.output)
    return result


def error_line(result: Result, path: object, line: int | None = None) -> str:
    """The one 'hma-check: error:' line, which must name ``path`` (and ``line``)."""
    lines = [text for text in result.stderr.splitlines() if text.startswith("hma-check: error:")]
    assert len(lines) == 1, result.stderr
    where = f"{path}:{line}:" if line is not None else str(path)
    assert where in lines[0], (where, lines[0])
    return lines[0]


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``; main thread only."""
    def expired(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def leftovers(folder: Path) -> list[str]:
    """Temporary files a write left behind (atomic writes go through .<name>.*.tmp)."""
    return sorted(p.name for p in Path(folder).rglob(".*.tmp")) if Path(folder).exists() else []
