"""Run a command as if this x86-64 CPU had AVX2 and FMA but no AVX-512 and no AMX (avx2_view.cc, preloaded).

ONNX Runtime then lays the graph out in its 8-channel NCHWc blocks and the fused kernel's dispatcher picks its AVX2
build, so the AVX2 code paths are tested and timed on an AVX-512 machine:

    python -m export.ort_sge.kernels.avx2_view python scripts/kernel_speed.py --json avx2.json

The timings are those of AVX2 code on this CPU (its caches and memory), not of an AVX2-only CPU. It needs Linux on
x86-64 with CPUID faulting (/proc/cpuinfo's flag ``cpuid_fault``) and a C++ compiler; a developer and test tool.
"""

import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from export.ort_sge.kernels.build import (
    AVX2_VIEW_LIBRARY,
    KERNEL_DIR,
    X86_64,
    KernelBuildError,
    cpu_flags,
    find_compiler,
    run_compiler,
)

SOURCE = KERNEL_DIR / "avx2_view.cc"


def avx2_view_problem() -> str | None:
    """Why the AVX2 view cannot run here, or None."""
    if platform.system() != "Linux" or platform.machine().lower() not in X86_64:
        return f"it needs Linux on x86-64; this is {platform.system()} on {platform.machine()}"
    flags = cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return "this CPU has no AVX2 with FMA to show"
    if "cpuid_fault" not in flags:
        return "this CPU or kernel has no CPUID faulting (no cpuid_fault in /proc/cpuinfo)"
    try:
        find_compiler()
    except KernelBuildError as err:
        return str(err)
    return None


def build_avx2_view(output_dir: Path, *, compiler: str | None = None) -> Path:
    """Compile the preload library into ``output_dir``; KernelBuildError with the reason where it cannot run."""
    problem = avx2_view_problem()
    if problem:
        raise KernelBuildError(f"the AVX2 view cannot run here: {problem}")
    library = Path(output_dir) / AVX2_VIEW_LIBRARY
    library.parent.mkdir(parents=True, exist_ok=True)
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall"]
    run_compiler([*find_compiler(compiler), *flags, str(SOURCE), "-o", str(library), "-ldl"], what="the AVX2 view")
    return library


def avx2_view_env(library: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the view's library first in LD_PRELOAD, for a child process. An outer
    view's library is dropped: two would each install a CPUID trap, and the counter a caller reads could be that of
    the one that never answers."""
    env = dict(os.environ if env is None else env)
    others = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if Path(p).name != AVX2_VIEW_LIBRARY]
    env["LD_PRELOAD"] = " ".join([str(library), *others])
    return env


def main(argv: list[str] | None = None) -> int:
    command = sys.argv[1:] if argv is None else argv
    if not command or command[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0] + "\n\nusage: python -m export.ort_sge.kernels.avx2_view COMMAND [ARG ...]")
        return 0 if command else 2
    with tempfile.TemporaryDirectory(prefix="avx2-view-") as scratch:
        try:
            library = build_avx2_view(Path(scratch))
        except KernelBuildError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        try:
            result = subprocess.run(command, env=avx2_view_env(library), check=False)
        except OSError as err:
            print(f"error: cannot run {command[0]!r}: {err.strerror}", file=sys.stderr)
            return 127
        except KeyboardInterrupt:
            return 130
    return result.returncode if result.returncode >= 0 else 128 - result.returncode


if __name__ == "__main__":
    sys.exit(main())
