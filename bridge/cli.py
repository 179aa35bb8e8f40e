"""What every command-line entry point of the project does with bad input: one ``error:`` line, exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bridge.errors import BridgeError

#: The exceptions a CLI turns into one ``error:`` line and exit status 2 (bad input, unreadable files).
BAD_INPUT = (BridgeError, OSError)


def report_bad_input(error: BaseException) -> int:
    """Print ``error`` as one ``error: ...`` line on stderr (an OSError as ``file: reason``); return 2."""
    if isinstance(error, OSError) and not isinstance(error, BridgeError):
        text = f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)
    else:
        text = str(error) or type(error).__name__
    print(f"error: {text.splitlines()[0] if text else type(error).__name__}", file=sys.stderr)
    return 2


def run_reporting_errors(action: Callable[[], object]) -> int:
    """Run ``action``; print what it returns (e.g. the written path) and return 0, or report the bad input
    it raised (:data:`BAD_INPUT`) as one ``error: ...`` line on stderr (no traceback) and return 2."""
    try:
        result = action()
    except BAD_INPUT as error:
        return report_bad_input(error)
    print(result)
    return 0
