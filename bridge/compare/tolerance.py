"""Tolerances: an element passes when ``|a - b| <= atol + rtol * |b|``.

Precedence, highest first: a per-key rule (``--tol 'GLOB=ATOL,RTOL'``, fnmatch on the
key, last matching rule wins), the global ``--atol`` / ``--rtol``, the dtype default
(torch.testing's defaults). Integer and bool tensors always compare exactly, and so does every leaf of
the kinds in EXACT_KINDS (matcher outputs and their loss normalisers).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

from bridge.errors import BridgeError

#: torch.testing.assert_close defaults, as (atol, rtol).
DTYPE_DEFAULTS: dict[str, tuple[float, float]] = {
    "float16": (1e-5, 1e-3),
    "bfloat16": (1e-5, 1.6e-2),
    "float32": (1e-5, 1.3e-6),
    "float64": (1e-7, 1e-7),
    "complex32": (1e-5, 1e-3),
    "complex64": (1e-5, 1.3e-6),
    "complex128": (1e-7, 1e-7),
    "float": (1e-7, 1e-7),  # python float leaves
}
#: Used for floating dtypes not listed above (e.g. float8 variants).
FALLBACK_FLOAT: tuple[float, float] = (1e-5, 1.6e-2)

EXACT_DTYPES = frozenset(
    {"bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "int", "str", "none"}
)


#: Recorded dtypes torch has no arithmetic for (stored as bytes, see docs/FORMAT.md): compared bit for bit.
OPAQUE_DTYPES = frozenset(
    {"float4_e2m1fn_x2", "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16"}
    | {f"{sign}int{bits}" for sign in ("", "u") for bits in range(1, 8)}
)


#: Kinds compared with zero tolerance whatever their dtype.
EXACT_KINDS = frozenset({"matching"})


def is_exact_dtype(dtype: str) -> bool:
    """True for dtypes that compare exactly (integers, bool, strings, None, opaque bit containers)."""
    return dtype in EXACT_DTYPES or dtype in OPAQUE_DTYPES or dtype.startswith(("int", "uint"))


@dataclass(frozen=True)
class ToleranceRule:
    """One per-key override: keys matching ``pattern`` (fnmatch) use ``atol``/``rtol``."""

    pattern: str
    atol: float
    rtol: float

    def __post_init__(self) -> None:
        """Refuse a tolerance that is not a finite number >= 0."""
        check_tolerance(f"tolerance of {self.pattern!r} atol", self.atol)
        check_tolerance(f"tolerance of {self.pattern!r} rtol", self.rtol)


def parse_tol_spec(spec: str) -> ToleranceRule:
    """Parse ``'GLOB=ATOL,RTOL'`` into a :class:`ToleranceRule`; raises BridgeError when malformed."""
    pattern, sep, values = spec.rpartition("=")
    parts = values.split(",")
    if not sep or not pattern or len(parts) != 2:
        raise BridgeError(f"bad --tol {spec!r}: expected 'GLOB=ATOL,RTOL'")
    try:
        atol, rtol = float(parts[0]), float(parts[1])
    except ValueError:
        raise BridgeError(f"bad --tol {spec!r}: ATOL and RTOL must be numbers") from None
    if not (math.isfinite(atol) and math.isfinite(rtol)) or atol < 0 or rtol < 0:
        raise BridgeError(f"bad --tol {spec!r}: ATOL and RTOL must be finite and >= 0")
    return ToleranceRule(pattern, atol, rtol)


def check_tolerance(name: str, value: float | None) -> None:
    """Raise BridgeError unless ``value`` (the ``name`` tolerance) is None or a finite number >= 0: a NaN
    tolerance would make every difference pass."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BridgeError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class TolerancePolicy:
    """Resolves the (atol, rtol) used for one key and dtype."""

    atol: float | None = None
    rtol: float | None = None
    rules: tuple[ToleranceRule, ...] = field(default_factory=tuple)

    def resolve(self, key: str, dtype: str, kind: str | None = None) -> tuple[float, float]:
        """Return ``(atol, rtol)`` for ``key`` of ``dtype`` (and ``kind``); ``(0, 0)`` for exact dtypes and kinds."""
        if is_exact_dtype(dtype) or kind in EXACT_KINDS:
            return 0.0, 0.0
        for rule in reversed(self.rules):
            if fnmatch.fnmatchcase(key, rule.pattern):
                return rule.atol, rule.rtol
        atol, rtol = DTYPE_DEFAULTS.get(dtype, FALLBACK_FLOAT)
        if self.atol is not None:
            atol = self.atol
        if self.rtol is not None:
            rtol = self.rtol
        return atol, rtol

    def describe(self) -> dict:
        """JSON-ready description of the policy (for the report's ``settings``)."""
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "rules": [{"pattern": r.pattern, "atol": r.atol, "rtol": r.rtol} for r in self.rules],
            "dtype_defaults": {k: list(v) for k, v in DTYPE_DEFAULTS.items()},
        }
