"""Find the installed fused-SGE custom-op library, checked against the record its build wrote (build.py).

Nothing here compiles, writes or needs a home directory: the library was built when the package was installed. A
library that is missing, truncated or altered is refused here, before ONNX Runtime could dlopen it. Only then does
``kernel_build`` load it, to ask which build of the maths its dispatcher picked on this CPU.
"""

import _ctypes
import ctypes
import json
from pathlib import Path

from export.ort_sge.kernels.build import ISA_FLAGS, KERNEL_DIR, LIBRARY_NAME, RECORD_FORMAT, RECORD_NAME
from models.atomic import file_sha256

REBUILD = (
    "reinstall sge-deploy (pip install --force-reinstall --no-deps sge-deploy; pip install -e . in a checkout) or "
    "rebuild it in place (python -m export.ort_sge.kernels.build)"
)


class KernelUnavailableError(RuntimeError):
    """The fused SGE kernel cannot be used on this machine; the message says why in one line."""


def kernel_library(directory: Path = KERNEL_DIR) -> Path:
    """The path of the installed, intact custom-op library, or KernelUnavailableError saying why there is none."""
    directory = Path(directory)
    record_path, library = directory / RECORD_NAME, directory / LIBRARY_NAME
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        raise KernelUnavailableError(
            f"the fused SGE kernel is not built ({record_path} is missing): {REBUILD}"
        ) from None
    except (OSError, ValueError) as err:
        raise KernelUnavailableError(
            f"the fused SGE kernel's build record {record_path} is unreadable ({err}): {REBUILD}"
        ) from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise KernelUnavailableError(
            f"the fused SGE kernel's build record {record_path} is not one this version wrote: {REBUILD}"
        )
    if record.get("library") is None:
        raise KernelUnavailableError(
            f"the fused SGE kernel was not built at install: {record.get('reason', 'no reason recorded')}"
        )
    if record.get("diagnostic"):  # build.py's diagnostic_record
        raise KernelUnavailableError(f"{library} is a diagnostic build that {record['diagnostic']}: {REBUILD}")
    try:
        size = library.stat().st_size
    except OSError:
        raise KernelUnavailableError(f"the fused SGE kernel library {library} is missing: {REBUILD}") from None
    if record.get("builds") != sorted(ISA_FLAGS):  # -march=native or single-ISA: no run-time choice, may SIGILL here
        raise KernelUnavailableError(
            f"{library} holds only the {', '.join(record.get('builds') or ['unknown'])} build, not the dispatched "
            f"library for every x86-64 CPU: {REBUILD}"
        )
    try:
        digest = file_sha256(library)
    except OSError as err:
        raise KernelUnavailableError(
            f"the fused SGE kernel library {library} is unreadable ({err}): {REBUILD}"
        ) from None
    if size != record.get("size") or digest != record.get("sha256"):
        raise KernelUnavailableError(
            f"the fused SGE kernel library {library} is corrupt ({size} bytes, expected {record.get('size')}, or its "
            f"SHA-256 differs from the build's): {REBUILD}"
        )
    return library


def kernel_build(library: Path) -> str:
    """The build of the maths that ``library`` runs on this CPU, as its own dispatcher chose it: "avx512", "avx2" or
    "baseline" (a one-build library: that build). Only for a library that kernel_library() or a build vouched for:
    this loads it, asks, and unloads it again. One built before the library could say (no ``SgeKernelBuild``) is
    refused in one line.

    Unloading matters: a library left mapped runs its destructors from the file's pages when the process exits, so a
    file replaced in place meanwhile (a half-finished copy, a rebuild by cp) would kill that exit with SIGBUS."""
    loaded = ctypes.CDLL(str(library))
    try:
        report = loaded.SgeKernelBuild
    except AttributeError:
        raise KernelUnavailableError(
            f"{library} predates this version of the package (it cannot report its build): {REBUILD}"
        ) from None
    else:
        report.restype = ctypes.c_char_p
        return report().decode()  # c_char_p is copied into Python bytes here, before the unload
    finally:
        _ctypes.dlclose(loaded._handle)  # ONNX Runtime, if it has this library open too, keeps its own reference
