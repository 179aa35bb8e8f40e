"""What every command-line entry point of the project does with bad input: one ``error:`` line, exit 2.

The exit-code contract (docs/EXIT_CODES.md): 0 everything passed, 1 a genuine divergence, 2 bad input or
an internal error. :func:`guarded_main` enforces it around each ``main``; :func:`check_outputs` refuses an
output path that would overwrite an input, land inside an input directory or collide with another output.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from bridge.errors import BridgeError

#: The exceptions a CLI turns into one ``error:`` line and exit status 2 (bad input, unreadable files).
BAD_INPUT = (BridgeError, OSError)

MainFn = TypeVar("MainFn", bound=Callable[..., int])


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def report_bad_input(error: BaseException) -> int:
    """Print ``error`` as one ``error: ...`` line on stderr (an OSError as ``file: reason``); return 2."""
    if isinstance(error, OSError) and not isinstance(error, BridgeError):
        text = f"{error.filename}: {error.strerror}" if error.filename and error.strerror else str(error)
    else:
        text = str(error) or type(error).__name__
    print(f"error: {_first_line(text) or type(error).__name__}", file=sys.stderr)
    return 2


def report_internal_error(prog: str, error: BaseException) -> int:
    """Print an exception nothing expected as one ``error:`` line naming the command and the exception; return 2."""
    text = _first_line(str(error))
    print(f"error: {prog}: {type(error).__name__}{': ' + text if text else ''}", file=sys.stderr)
    return 2


def guarded_main(main: MainFn) -> MainFn:
    """Wrap a CLI ``main(argv) -> int`` so that no exception escapes it as a traceback: bad input
    (:data:`BAD_INPUT`) and any other exception become one ``error:`` line and exit status 2 (a crash is
    never reported as 1, the status of a genuine divergence). ``SystemExit`` (argparse) and
    ``KeyboardInterrupt`` pass through."""
    prog = f"python -m {main.__module__.removesuffix('.__main__')}"

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except BAD_INPUT as error:
            return report_bad_input(error)
        except RecursionError:
            print(f"error: {prog}: input nested too deeply", file=sys.stderr)
            return 2
        except Exception as error:  # the contract: never a traceback, never exit 1 for a crash
            return report_internal_error(prog, error)

    return wrapper  # type: ignore[return-value]


def run_reporting_errors(action: Callable[[], object]) -> int:
    """Run ``action``; print what it returns (e.g. the written path) and return 0, or report the bad input
    it raised (:data:`BAD_INPUT`) as one ``error: ...`` line on stderr (no traceback) and return 2."""
    try:
        result = action()
    except BAD_INPUT as error:
        return report_bad_input(error)
    print(result)
    return 0


PathLike = str | os.PathLike[str]


def _resolved(path: PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve(strict=False)


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(inputs: Mapping[str, PathLike | None], outputs: Mapping[str, PathLike | None]) -> None:
    """Refuse, before anything is written, every output path that is an input, lies inside an input
    directory, is an existing directory, or is the same path as another output.

    ``inputs`` and ``outputs`` map the name the user knows (``SRC``, ``--report``) to the path given;
    ``None`` paths are skipped. Paths are compared resolved (symlinks, ``..``) and by inode. Raises
    :class:`BridgeError` naming both options and the path the user gave.
    """
    ins = [(name, os.fspath(p), _resolved(p)) for name, p in inputs.items() if p is not None and os.fspath(p) != ""]
    outs = [(name, os.fspath(p), _resolved(p)) for name, p in outputs.items() if p is not None and os.fspath(p) != ""]
    for n, (out_name, out_text, out_path) in enumerate(outs):
        if out_path.is_dir():
            raise BridgeError(f"{out_name} {out_text}: is a directory, not an output file")
        for in_name, in_text, in_path in ins:
            if _same_file(out_path, in_path):
                raise BridgeError(
                    f"{out_name} {out_text}: is the input {in_name} ({in_text}); refusing to overwrite an input"
                )
            if in_path.is_dir() and in_path in out_path.parents:
                raise BridgeError(
                    f"{out_name} {out_text}: lies inside the input {in_name} ({in_text}); "
                    "write outputs outside the inputs"
                )
        for other_name, other_text, other_path in outs[n + 1 :]:
            if _same_file(out_path, other_path):
                raise BridgeError(f"{out_name} {out_text} and {other_name} {other_text}: the same file")


def finite_nonnegative(option: str) -> Callable[[str], float]:
    """An argparse ``type`` for ``option``: a finite float >= 0 (NaN, infinities and negatives are refused,
    exit 2 with a message naming the option)."""
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{option} must be finite and >= 0, got {text!r}")
        return value

    parse.__name__ = option.lstrip("-")
    return parse


def add_json_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--json PATH``, the one name of every verb's JSON report (``--report``, its former name in convert,
    convert draft and initcheck, is still read but no longer shown)."""
    parser.add_argument("--json", metavar="PATH", help=help)
    parser.add_argument("--report", dest="json", help=argparse.SUPPRESS)


def add_quiet_option(
    parser: argparse.ArgumentParser, help: str = "print nothing but errors and the final line"
) -> None:
    """``--quiet``, the same flag on every verb."""
    parser.add_argument("--quiet", action="store_true", help=help)


def examples(*commands: str) -> str:
    """An ``--help`` epilog listing example command lines (use with RawDescriptionHelpFormatter)."""
    return "examples:\n" + "\n".join(f"  {command}" for command in commands)
