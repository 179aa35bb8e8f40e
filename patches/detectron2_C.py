"""Stand-in for detectron2's compiled ``_C`` extension in the pure-Python build made by d2-mmdet-bridge.

detectron2 0.6 imports ``_C`` at module import time in several places, and ``collect_env_info``
(called by ``default_setup`` in every ``train_net.py``) asks it three version questions. This module
answers those; any other name is a compiled op (deformable conv, rotated boxes, COCOeval_opt, ...)
that this build lacks, and looking it up raises ``CompiledOpMissing`` naming the op.

``CompiledOpMissing`` is an AttributeError, as a module ``__getattr__`` must raise (PEP 562): so
``hasattr(_C, op)`` is False and ``getattr(_C, op, default)`` returns the default, which is how code
probes for optional ops. It cannot also be an ImportError (CPython refuses a class with both bases:
"multiple bases have instance lay-out conflict"); ``from detectron2._C import op`` still raises an
ImportError naming the op, since Python turns the AttributeError into one.
"""

BUILD_NOTE = "not compiled (pure-Python detectron2 0.6 built by d2-mmdet-bridge)"


def get_compiler_version() -> str:
    """Answer collect_env_info: no compiler built this module."""
    return BUILD_NOTE


def get_cuda_version() -> str:
    """Answer collect_env_info: no CUDA compiler built this module."""
    return BUILD_NOTE


def has_cuda() -> bool:
    """Answer collect_env_info: this module has no CUDA kernels."""
    return False


class CompiledOpMissing(AttributeError):
    """A compiled op of detectron2 looked up on the pure-Python build's ``_C`` stand-in."""

    def __init__(self, op_name: str) -> None:
        super().__init__(
            f"detectron2._C.{op_name} is a compiled op, and this detectron2 is the pure-Python build "
            "(pb1-detectron2==0.6 sdist, built by d2-mmdet-bridge's make setup): use a model/config that "
            "does not need it, or install a detectron2 compiled with its C++/CUDA ops.",
            name=op_name)


def __getattr__(op_name: str):
    """Module attribute lookup (PEP 562) for names not defined above: every one is a missing compiled op."""
    if op_name.startswith("__"):
        raise AttributeError(op_name)
    raise CompiledOpMissing(op_name)
