"""What every command-line entry point of the project does with bad input: one ``error:`` line, exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bridge.errors import BridgeError


def run_reporting_errors(action: Callable[[], object]) -> int:
    """Run ``action``; print what it returns (e.g. the written path) and return 0, or print the
    BridgeError it raised as one ``error: ...`` line on stderr (no traceback) and return 2."""
    try:
        result = action()
    except BridgeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result)
    return 0
