"""The ``d2mb`` console script: ``d2mb VERB ARGS...`` runs ``python -m bridge.VERB ARGS...`` (same arguments,
same output, same exit status)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from bridge.cli import guarded_main

#: Each verb and the module whose ``main(argv)`` it runs.
VERBS = {
    "subset": "bridge.subset.__main__",
    "convert": "bridge.convert.__main__",
    "compare": "bridge.compare.__main__",
    "panoptic": "bridge.panoptic.__main__",
    "meta": "bridge.meta.__main__",
    "initcheck": "bridge.initcheck.__main__",
    "local": "bridge.local.__main__",
    "report": "bridge.report.__main__",
    "align": "bridge.align.__main__",
}


def usage() -> str:
    """The one-paragraph help ``d2mb`` prints for ``-h`` or a missing / unknown verb."""
    lines = ["usage: d2mb VERB [ARGS...]   (the same as python -m bridge.VERB [ARGS...])", "verbs:"]
    lines += [f"  {verb:10s} python -m {module.removesuffix('.__main__')}" for verb, module in VERBS.items()]
    return "\n".join(lines)


@guarded_main
def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to the verb's ``main``; return its exit status
    (2 with an ``error:`` line for a missing or unknown verb)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args or args[0] not in VERBS:
        what = f"unknown verb {args[0]!r}" if args else "no verb given"
        print(f"error: {what}; one of: {', '.join(VERBS)}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[args[0]])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
