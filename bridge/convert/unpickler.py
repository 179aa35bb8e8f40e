"""The only module of the bridge that unpickles: a restricted loader for detectron2 ``.pkl`` files.

Only numpy array reconstruction and builtin containers may be named by the pickle; anything else
(``os.system`` in a ``__reduce__``, arbitrary classes) is refused with a ConversionError that says to
pass ``--unsafe-pickle`` for files you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from bridge.errors import ConversionError

_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle.Unpickler whose ``find_class`` allows only numpy arrays/dtypes/scalars and containers."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` only when it is on the allow list; otherwise refuse."""
        if (module, name) in _ALLOWED or (
            module.startswith("numpy") and name.endswith("DType") and module in ("numpy.dtypes",)
        ):
            return super().find_class(module, name)
        raise ConversionError(
            f"pickle wants {module}.{name}, which the safe loader refuses; "
            "pass --unsafe-pickle only if you trust this file"
        )


def restricted_load(path: str | Path) -> Any:
    """Unpickle ``path`` with the restricted unpickler (latin1 for Python 2 era detectron2 pickles)."""
    try:
        with open(path, "rb") as handle:  # streamed: no second copy of the whole file in memory
            return RestrictedUnpickler(handle, encoding="latin1").load()
    except ConversionError:
        raise
    except Exception as exc:  # any unpickling failure is a corrupt file
        raise ConversionError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from None


def unsafe_load(path: str | Path) -> Any:
    """Unpickle ``path`` with the full pickle machinery: runs code from the file, trusted files only."""
    with open(path, "rb") as handle:
        try:
            return pickle.load(handle, encoding="latin1")
        except Exception as exc:
            raise ConversionError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from None
