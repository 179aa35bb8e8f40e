"""Value rules: a tensor changed in place of its name (class rows remapped, reshaped, transposed), and back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bridge.convert.inverse import NotInvertible
from bridge.convert.kinds.base import ValueRule
from bridge.convert.templates import (
    MAX_DIM,
    MAX_ELEMENTS,
    compile_regex,
    int_field,
    int_list,
)
from bridge.errors import ConversionError

#: Where a class_rows tensor keeps its background / no-object row: row 0, the last row, or nowhere.
BACKGROUNDS = ("none", "first", "last")


@dataclass(frozen=True)
class ClassRows(ValueRule):
    """``{kind: class_rows, from, index, dim, background | keep_trailing}``: gather class rows by an index list
    (counting class rows only); the background row(s) stay where they are.  Backwards, the rows go back to
    their places; rows the index left out come from the original, so without one only a reordering inverts."""

    index_list: tuple[int, ...] = ()
    dim: int = 0
    keep_trailing: int = 0
    background: str = "none"
    kind: ClassVar[str] = "class_rows"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> ClassRows:
        pattern = compile_regex(spec, "from", label)
        rows = spec.get("index")
        if isinstance(rows, str):
            from bridge.coco.coco91 import INDEX_LISTS

            if rows not in INDEX_LISTS:
                raise ConversionError(f"rule {label}: unknown index list {rows!r} (known: {', '.join(INDEX_LISTS)})")
            rows = list(INDEX_LISTS[rows])
        if not isinstance(rows, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < MAX_ELEMENTS for i in rows
        ):
            raise ConversionError(f"rule {label}: 'index' must be a list of ints >= 0 or a known list name")
        background = spec.get("background", "none")
        if background not in BACKGROUNDS:
            raise ConversionError(f"rule {label}: 'background' must be one of {', '.join(BACKGROUNDS)}")
        keep_trailing = int_field(spec, "keep_trailing", 0, label, 0, MAX_ELEMENTS)
        if keep_trailing and background != "none":
            raise ConversionError(f"rule {label}: give 'background' or 'keep_trailing', not both")
        return cls(
            index,
            stage,
            pattern,
            dict(spec),
            index_list=tuple(rows),
            dim=int_field(spec, "dim", 0, label, -MAX_DIM, MAX_DIM),
            keep_trailing=keep_trailing,
            background=background,
        )

    @property
    def _lead_trail(self) -> tuple[int, int]:
        return (1 if self.background == "first" else 0), (1 if self.background == "last" else self.keep_trailing)

    def forward(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        """Indices count class rows only: with ``background: first`` class row ``i`` is tensor row ``i + 1``
        and the background row stays row 0; with ``background: last`` it stays the last row;
        ``keep_trailing: N`` keeps the last N rows after the gathered ones."""
        if tensor.dim() <= self.dim:
            raise ConversionError(f"rule {self.label}: {key!r} has {tensor.dim()} dims, no dim {self.dim}")
        n = tensor.shape[self.dim]
        lead, trail = self._lead_trail
        index = [i + lead for i in self.index_list]
        if index and (max(index) >= n - trail or min(index) < lead):
            raise ConversionError(
                f"rule {self.label}: {key!r} has {n} rows along dim {self.dim}; index needs "
                f"{max(index) + 1 + trail} (background: {self.background})"
            )
        index = list(range(lead)) + index + list(range(n - trail, n))
        return tensor.index_select(self.dim, torch.tensor(index, dtype=torch.long, device=tensor.device))

    def reverse(self, key: str, tensor: torch.Tensor, original: torch.Tensor | None) -> torch.Tensor:
        lead, trail = self._lead_trail
        rows = len(self.index_list)
        if tensor.dim() <= self.dim or tensor.shape[self.dim] != lead + rows + trail:
            raise NotInvertible(
                f"rule {self.label}: {key!r} has {list(tensor.shape)}, not {lead + rows + trail} "
                f"rows along dim {self.dim}"
            )
        permutation = sorted(self.index_list) == list(range(rows))
        if original is None and not permutation:
            raise NotInvertible(
                f"rule {self.label}: {key!r} lost the class rows its index leaves out; "
                "give the original checkpoint as --target to restore them"
            )
        n = lead + rows + trail if original is None else original.shape[self.dim]
        if original is not None and (max(self.index_list, default=-1) + lead >= n - trail):
            raise NotInvertible(f"rule {self.label}: the original {key!r} has {n} rows, too few for the index")
        out = original.to(tensor.dtype).clone() if original is not None else torch.empty_like(tensor)
        places = list(range(lead)) + [i + lead for i in self.index_list] + list(range(n - trail, n))
        out = out.movedim(self.dim, 0)
        out[torch.tensor(places, dtype=torch.long)] = tensor.movedim(self.dim, 0)
        return out.movedim(0, self.dim).contiguous()


@dataclass(frozen=True)
class Reshape(ValueRule):
    """``{kind: reshape, from, shape}``; backwards the original's shape is needed (``--target``)."""

    shape: tuple[int, ...] = ()
    kind: ClassVar[str] = "reshape"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Reshape:
        pattern = compile_regex(spec, "from", label)
        shape = int_list(spec.get("shape"), "shape", label, -1, MAX_ELEMENTS)
        return cls(index, stage, pattern, dict(spec), shape=tuple(shape))

    def forward(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        try:
            return tensor.reshape(self.shape)
        except RuntimeError as exc:
            raise ConversionError(f"rule {self.label}: cannot reshape {key!r} {list(tensor.shape)}: {exc}") from None

    def reverse(self, key: str, tensor: torch.Tensor, original: torch.Tensor | None) -> torch.Tensor:
        if original is None:
            raise NotInvertible(
                f"rule {self.label}: the shape of {key!r} before the reshape is unknown; give the original as --target"
            )
        return tensor.reshape(original.shape)


@dataclass(frozen=True)
class Transpose(ValueRule):
    """``{kind: transpose, from, dims}``: swap two dims (its own reverse)."""

    dims: tuple[int, int] = (0, 1)
    kind: ClassVar[str] = "transpose"

    @classmethod
    def parse(cls, index: int, stage: str, spec: dict[str, Any], label: str) -> Transpose:
        pattern = compile_regex(spec, "from", label)
        dims = int_list(spec.get("dims", [0, 1]), "dims", label, -MAX_DIM, MAX_DIM)
        if len(dims) != 2:
            raise ConversionError(f"rule {label}: 'dims' must be two ints")
        return cls(index, stage, pattern, dict(spec), dims=(dims[0], dims[1]))

    def forward(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        a, b = self.dims
        if max(a, b) >= tensor.dim():
            raise ConversionError(f"rule {self.label}: {key!r} has {tensor.dim()} dims, cannot swap {a},{b}")
        return tensor.transpose(a, b)

    def reverse(self, key: str, tensor: torch.Tensor, original: torch.Tensor | None) -> torch.Tensor:
        return self.forward(key, tensor).contiguous()
