"""Compile the fused SGE kernel (``sge_ort_op.cc``) into an ONNX Runtime custom-op library, on this machine.

The library is built with the host's C++ compiler for the host's CPU (``-march=native``) and cached under a key of
the sources, the flags, the compiler's version and the CPU's flags, so a copy never runs on a CPU it was not built
for. The onnxruntime wheel ships no C headers; ``sge_ort_op.cc`` declares the few stable C ABI entries it uses.
"""

import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).resolve().parent
SOURCES = ("sge_math.h", "sge_ort_op.cc")
# -fassociative-math (with the two flags it needs) lets sums vectorise; NaN and Inf keep their IEEE meaning.
FLAGS = (
    "-O3",
    "-march=native",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-fvisibility=hidden",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fno-signed-zeros",
    "-fassociative-math",
    "-Wno-psabi",
)
DEFAULT_CACHE = Path.home() / ".cache" / "sge-deploy" / "kernels"


class KernelBuildError(RuntimeError):
    """The fused SGE kernel could not be compiled on this machine."""


def _compiler() -> str:
    for name in ("g++", "c++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    raise KernelBuildError(
        "the fused SGE kernel needs a C++ compiler and none was found (g++, c++, clang++): install one "
        "(Debian: apt install g++) or use the portable model.onnx"
    )


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=4)
def build_key(compiler: str) -> str:
    """A hash of what the library's bytes depend on (once per process: it runs the compiler for its version)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((KERNEL_DIR / name).read_bytes())
    for text in (" ".join(FLAGS), version, _cpu_flags()):
        digest.update(text.encode())
    return digest.hexdigest()[:16]


def kernel_library(*, cache_dir: str | Path | None = None) -> Path:
    """The path of the compiled custom-op library, compiling it first if this machine has no cached copy."""
    compiler = _compiler()
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    target = cache / f"libsge_ort_op-{build_key(compiler)}.so"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("compiling the fused SGE kernel with %s → %s", compiler, target)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        built = Path(scratch) / target.name
        command = [compiler, *FLAGS, str(KERNEL_DIR / "sge_ort_op.cc"), "-o", str(built)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            first_error = next((ln for ln in result.stderr.splitlines() if "error" in ln), result.stderr.strip())
            raise KernelBuildError(
                f"compiling the fused SGE kernel failed: {first_error}; command: {' '.join(command)}"
            )
        os.replace(built, target)  # atomic: a concurrent build or a crash never leaves a half-written library
    return target
