"""Build the OpenVINO SGE extension (``sge_ov_op.cc``) into a shared library: at install time, or by hand.

``python -m export.ov_sge.build [DIR]`` (what setup.py calls, through ``build_extension``) compiles it against the
installed openvino wheel's headers and library; the result is named after that OpenVINO version, whose C++ ABI it
needs. One library runs on any x86-64 CPU: its hot loops are compiled for AVX-512, AVX2 and plain x86-64 and
chosen when it loads (GCC ``target_clones``), never ``-march=native``.
"""

import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from export.ort_sge.kernels.build import COMMON_FLAGS, KernelBuildError, find_compiler

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "sge_ov_op.cc"  # includes ../ort_sge/kernels/sge_math.h
INSTALL_DIR = Path(__file__).resolve().parent / "lib"
# The ONNX Runtime kernel's flags, plus reassociation for this file's auto-vectorised sums (with -fno-math-errno and
# -fno-trapping-math among the common flags; NaN and Inf keep their meaning).
FLAGS = (*COMMON_FLAGS, "-shared", "-fno-signed-zeros", "-fassociative-math")


class OvKernelBuildError(RuntimeError):
    """The OpenVINO SGE extension cannot be built or found on this machine."""


def openvino_paths() -> tuple[str, Path, Path]:
    """(version, include directory, libopenvino path) of the installed openvino wheel."""
    try:
        import openvino
    except ImportError as err:
        raise OvKernelBuildError(
            "the OpenVINO SGE extension needs the openvino package: pip install 'sge-deploy[openvino]'"
        ) from err
    root = Path(openvino.__file__).parent
    libraries = sorted((root / "libs").glob("libopenvino.so*"))
    if not (root / "include" / "openvino").is_dir() or not libraries:
        raise OvKernelBuildError(
            f"the openvino wheel at {root} ships no C++ headers or libopenvino.so; reinstall it (pip install openvino)"
        )
    return openvino.__version__.split("-")[0], root / "include", libraries[0]


def library_name(version: str) -> str:
    return f"libsge_ov-{version}.so"


def installed_library(directory: Path = INSTALL_DIR) -> Path:
    """The library built for the installed OpenVINO, or OvKernelBuildError saying how to build it."""
    version, _, _ = openvino_paths()
    path = directory / library_name(version)
    if not path.is_file():
        raise OvKernelBuildError(
            f"the OpenVINO SGE extension for openvino {version} is not built ({path} is missing): run "
            "`python -m export.ov_sge.build` after installing openvino (pip's isolated build has no openvino headers)"
        )
    return path


def build_extension(directory: Path = INSTALL_DIR) -> Path:
    """Compile the extension into ``directory`` and return its path; a failed build leaves no library behind."""
    try:
        compiler = find_compiler()
    except KernelBuildError as err:
        raise OvKernelBuildError(f"the OpenVINO SGE extension needs a C++ compiler: {err}") from err
    version, include, libopenvino = openvino_paths()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / library_name(version)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        partial = Path(scratch) / target.name
        command = [*compiler, *FLAGS, f"-I{include}", "-o", str(partial), str(SOURCE), str(libopenvino)]
        command.append(f"-Wl,-rpath,{libopenvino.parent}")
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise OvKernelBuildError(f"compiling {SOURCE.name} failed:\n{result.stderr[-2000:]}")
        partial.replace(target)
    logger.info("built %s", target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        path = build_extension(Path(args[0]) if args else INSTALL_DIR)
    except OvKernelBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
