"""The fused SGE kernel for ONNX Runtime: C++ sources, the install-time build (build.py) and the loader's check.

``kernel_library()`` returns the installed custom-op library or raises ``KernelUnavailableError`` with the reason,
and ``kernel_build(library)`` names the instruction-set build it runs here. Both are loaded on first use, so
``python -m export.ort_sge.kernels.build`` runs cleanly.
"""

from typing import Any

__all__ = ["KernelUnavailableError", "kernel_build", "kernel_library"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from export.ort_sge.kernels import library

        return getattr(library, name)
    raise AttributeError(f"module 'export.ort_sge.kernels' has no attribute {name!r}")
