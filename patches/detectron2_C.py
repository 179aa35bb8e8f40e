"""Stand-in for detectron2's compiled ``_C`` extension in the pure-Python build made by d2-mmdet-bridge.

detectron2 0.6 imports ``_C`` at module import time in several places, and ``collect_env_info``
(called by ``default_setup`` in every ``train_net.py``) asks it three version questions. This module
answers those, and raises a clear ImportError naming the op for anything else: the compiled ops
(deformable conv, rotated boxes, COCOeval_opt, ...) are not available in this build.
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


def __getattr__(op_name: str):
    if op_name.startswith("__"):
        raise AttributeError(op_name)
    raise ImportError(
        f"detectron2._C.{op_name} is a compiled op, and this detectron2 is the pure-Python build "
        "(pb1-detectron2==0.6 sdist, built by d2-mmdet-bridge's make setup): use a model/config that "
        "does not need it, or install a detectron2 compiled with its C++/CUDA ops."
    )
