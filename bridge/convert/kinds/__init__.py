"""The rule kinds, one class each: how a rule reads its YAML, applies itself to a state dict, and runs backwards.

Three roles, as the engine schedules them inside a stage:

* **value** rules (:class:`ClassRows`, :class:`Reshape`, :class:`Transpose`) change a tensor, not its name:
  ``forward(key, tensor)`` and ``reverse(key, tensor, original)``;
* **name** rules (:class:`Rename`, :class:`Split`, :class:`Concat`, :class:`Drop`, :class:`DropAlias`) say
  what a key becomes: ``forward(key, match, current)`` gives the new (name, tensor) pairs (none: dropped);
  backwards ``invert(key)`` names the source key(s) an output key can come from and ``unmerge`` rebuilds
  their tensors;
* **add** rules (:class:`Add`) create keys the source lacks at the end of their stage; backwards they are
  removed again.

What cannot run backwards says so (:class:`~bridge.convert.inverse.NotInvertible`): a dropped key, class
rows the forward left out, a reshape's original shape; ``bridge.convert.reverse`` fills those from the
original checkpoint (``--target``) or reports them.
"""

from __future__ import annotations

from bridge.convert.kinds.add import Add
from bridge.convert.kinds.base import Inversion, NameRule, Rule, ValueRule
from bridge.convert.kinds.names import Concat, Drop, DropAlias, Rename, Split, same_values
from bridge.convert.kinds.values import BACKGROUNDS, ClassRows, Reshape, Transpose

KINDS: dict[str, type[Rule]] = {
    cls.kind: cls for cls in (Rename, Drop, DropAlias, Split, Concat, ClassRows, Reshape, Transpose, Add)
}

__all__ = [
    "KINDS",
    "BACKGROUNDS",
    "Add",
    "ClassRows",
    "Concat",
    "Drop",
    "DropAlias",
    "Inversion",
    "NameRule",
    "Rename",
    "Reshape",
    "Rule",
    "Split",
    "Transpose",
    "ValueRule",
    "same_values",
]
