"""Builds the fused SGE kernel (export/ort_sge/kernels) into the package: the project's metadata is in pyproject.toml.

The library is built by export/ort_sge/kernels/build.py as a setuptools extension, on ``pip install .``,
``pip install -e .`` and wheel builds alike. Where it cannot be built (no C++ compiler, a CPU that is not x86-64)
the install still succeeds, and a record beside the package says why the fused ONNX Runtime graph is unavailable.
"""

import importlib.util
import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
KERNEL = "export.ort_sge.kernels.libsge_ort_op"


def _kernel_build_module():
    """export/ort_sge/kernels/build.py, loaded by path: the package is not importable while it is being built."""
    spec = importlib.util.spec_from_file_location(
        "sge_kernel_build", HERE / "export" / "ort_sge" / "kernels" / "build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildKernel(build_ext):
    """build_ext for the one extension: a custom-op library for ONNX Runtime, not a Python module."""

    def get_ext_filename(self, fullname: str) -> str:
        if fullname == KERNEL:
            return os.path.join("export", "ort_sge", "kernels", _kernel_build_module().LIBRARY_NAME)
        return super().get_ext_filename(fullname)

    def build_extension(self, ext: Extension) -> None:
        if ext.name != KERNEL:
            super().build_extension(ext)
            return
        kernel = _kernel_build_module()
        kernel.build_or_record(Path(self.get_ext_fullpath(ext.name)).parent, compiler=os.environ.get("CXX"))

    def copy_extensions_to_source(self) -> None:  # in place (--inplace, pip install -e): the record goes too
        super().copy_extensions_to_source()
        kernel = _kernel_build_module()
        built = (
            Path(self.build_lib) / "export" / "ort_sge" / "kernels"
        )  # where build_extension wrote (inplace is off there)
        source = HERE / "export" / "ort_sge" / "kernels"
        if not (built / kernel.LIBRARY_NAME).exists():
            (source / kernel.LIBRARY_NAME).unlink(missing_ok=True)
        shutil.copyfile(built / kernel.RECORD_NAME, source / kernel.RECORD_NAME)


setup(
    # optional: a build that cannot compile the kernel records why and lets the install finish
    ext_modules=[Extension(KERNEL, sources=["export/ort_sge/kernels/sge_ort_op.cc"], optional=True)],
    cmdclass={"build_ext": BuildKernel},
)
