"""Build the fused SGE kernel into an ONNX Runtime custom-op library: setup.py runs this when the package is built
or installed (``pip install .`` / ``pip install -e .``); developers rebuild in place with

    python -m export.ort_sge.kernels.build                               # libsge_ort_op.so beside this file, dispatched
    python -m export.ort_sge.kernels.build --native --output-dir /tmp/n  # a -march=native build, to compare speed

The library is compiled for baseline x86-64: the maths (sge_units.cc) is compiled once per instruction set (SSE2,
AVX2+FMA, AVX-512), each build in its own namespace, and sge_ort_op.cc picks the one the CPU supports at load
time, so one file runs on every x86-64 CPU. Beside it the build writes a record (libsge_ort_op.json: size and
SHA-256, or why there is no library) that ``export.ort_sge.kernels.kernel_library`` checks before anything loads
the file.
Only the standard library is imported here: setup.py loads this file by path, before the package is installed.
"""

import argparse
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

logger = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).resolve().parent
LIBRARY_NAME = "libsge_ort_op.so"
RECORD_NAME = "libsge_ort_op.json"
RECORD_FORMAT = 1

# No -ffast-math: NaN and Inf keep their meaning. The vector code is explicit, so no reassociation is needed.
COMMON_FLAGS = (
    "-O3",
    "-std=c++17",
    "-fPIC",
    "-fvisibility=hidden",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-ffp-contract=fast",
    "-Wall",
    "-Wno-psabi",
)
# The maths, once per instruction set; sge_ort_op.cc checks the same features before it calls a build.
ISA_FLAGS = {
    "baseline": (),
    "avx2": ("-mavx2", "-mfma"),
    "avx512": ("-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"),
}
X86_64 = {"x86_64", "amd64"}


# The AVX2 view (avx2_view.cc, preloaded by avx2_view.py) hides these from the CPUID of the process it runs in.
AVX2_VIEW_LIBRARY = "libavx2_view.so"


def hidden_by_avx2_view(flag: str) -> bool:
    """Whether the AVX2 view hides this /proc/cpuinfo flag: AVX-512 of every kind, AMX and AVX-VNNI."""
    return flag.startswith(("avx512", "amx")) or flag == "avx_vnni"


def avx2_view_active() -> bool:
    """Whether this process runs under the AVX2 view (its library is mapped here)."""
    try:
        return AVX2_VIEW_LIBRARY in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def cpu_flags() -> set[str]:
    """This CPU's feature flags from /proc/cpuinfo (empty where there is none), as this process's CPUID shows them:
    under the AVX2 view, without what it hides."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    flags = next((set(ln.split(":", 1)[1].split()) for ln in lines if ln.startswith("flags")), set())
    return {f for f in flags if not hidden_by_avx2_view(f)} if avx2_view_active() else flags


class KernelBuildError(RuntimeError):
    """The library could not be built here (no compiler, not x86-64, or the compiler failed)."""


def find_compiler(explicit: str | None = None) -> list[str]:
    """The C++ compiler's command: ``explicit`` (for example $CXX, which may carry a launcher or arguments, such as
    "ccache g++") or the first of g++, c++, clang++ on PATH."""
    for command in (shlex.split(explicit),) if explicit else (["g++"], ["c++"], ["clang++"]):
        found = shutil.which(command[0]) if command else None
        if found:
            return [found, *command[1:]]
    wanted = explicit or "g++, c++ or clang++"
    raise KernelBuildError(f"no C++ compiler found ({wanted}): install one (Debian: apt install g++) and reinstall")


def run_compiler(command: list[str], *, what: str = "the fused SGE kernel") -> str:
    """Run one compile; its diagnostics (warnings) when it succeeds, KernelBuildError naming the cause when not."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KernelBuildError(
            f"compiling {what} failed: {compiler_cause(result.stderr)}; command: {' '.join(command)}"
        )
    return result.stderr


def run_compilers(commands: list[list[str]]) -> list[str]:
    """Run independent compiles side by side, one per CPU (each is a process of its own): their diagnostics, in the
    given order; the first failure in that order is raised once all have ended."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(commands), os.cpu_count() or 1))) as pool:
        futures = [pool.submit(run_compiler, command) for command in commands]
        return [future.result() for future in futures]


def compiler_cause(stderr: str) -> str:
    """The line of a failed compile that says why: the first error, or for a failed link the linker's (collect2's
    "ld returned 1 exit status" only says that the link failed)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("collect2")]
    causes = [ln for ln in lines if any(word in ln for word in ("error", "undefined reference", "cannot "))]
    return next(iter(causes or lines), "the compiler printed nothing")


def _compiler_version(compiler: list[str]) -> str:
    result = subprocess.run([*compiler, "--version"], capture_output=True, text=True, check=False)
    return (result.stdout.splitlines() or ["unknown"])[0]


def _write_atomically(path: Path, data: bytes) -> None:
    # Not models.atomic.atomic_path: setup.py loads this file by path, before the package can be imported.
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # a power loss leaves the old file or this one, never an empty one
        os.chmod(scratch, 0o755 if path.suffix == ".so" else 0o644)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


# Diagnostic builds for scripts/kernel_speed.py --floors (never installed): what an unfused block tail costs at
# least. "apply" makes only the one pass any unfused tail needs, out = relu(x · ½ + identity); "none" returns at
# once (the graph without the tail's work); "x_only" and "identity_only" make that pass reading one of its two
# inputs, out = relu(x · ½) and out = relu(identity): which stream the pass's cost comes from.
FLOORS = {"apply": 1, "none": 2, "x_only": 3, "identity_only": 4}


def diagnostic_record(
    *, floor: str | None = None, floor_size: int = 0, trace: bool = False, swap_halves: bool = False
) -> dict:
    """The build record's entries for a diagnostic build (none for the shipped one): each option given, and under
    "diagnostic" what the build does instead of the kernel, which library.kernel_library refuses."""
    does = [f"computes no SGE (floor {floor!r})"] if floor else []
    does += ["traces its units"] if trace else []
    does += ["swaps its threads' halves"] if swap_halves else []
    entries = {"floor": floor, "floor_size": floor_size, "trace": trace, "swap_halves": swap_halves}
    return {k: v for k, v in entries.items() if v} | ({"diagnostic": " and ".join(does)} if does else {})


def build_library(
    output_dir: Path,
    *,
    compiler: str | None = None,
    native: bool = False,
    isas: tuple[str, ...] = (),
    floor: str | None = None,
    floor_size: int = 0,
    trace: bool = False,
    swap_halves: bool = False,
) -> Path:
    """Compile the library into ``output_dir`` and write its record; returns the library's path.

    ``native``: one build for this CPU only (-march=native), for speed comparisons; never installed.
    ``isas``: only these builds of ISA_FLAGS (one: no dispatch), for tests of a path this CPU would not pick.
    ``floor``: a diagnostic build of FLOORS that computes no SGE (wrong results by design), for speed bounds only.
    ``floor_size``: with ``floor``, only blocks of this H·W take the floor (one ResNet stage); the others compute SGE.
    ``trace``: a diagnostic build that records which thread ran each unit and when (sge_unit_trace.h); never installed.
    ``swap_halves``: a diagnostic build whose float op hands the thread that calls it the upper half of the units and
    the pool's thread the lower (sge_ort_op.cc's unit_of); same results, for where-the-data-is studies; never installed.
    """
    if floor is not None and floor not in FLOORS:
        raise ValueError(f"unknown floor {floor!r}; choose from {sorted(FLOORS)}")
    if floor_size and (floor is None or floor_size < 0):
        raise ValueError(f"floor_size needs a floor and a positive H·W; got floor={floor!r}, floor_size={floor_size}")
    floor_flags = (f"-DSGE_FLOOR={FLOORS[floor]}",) if floor else ()
    floor_flags += (f"-DSGE_FLOOR_SIZE={floor_size}",) if floor_size else ()
    machine = platform.machine().lower()
    if machine not in X86_64:
        raise KernelBuildError(f"the fused SGE kernel is built for x86-64 CPUs only; this one is {machine}")
    cxx = find_compiler(compiler)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    unknown = set(isas) - set(ISA_FLAGS)
    if unknown:
        raise ValueError(f"unknown instruction sets {sorted(unknown)}; choose from {sorted(ISA_FLAGS)}")
    builds = {"native": ("-march=native",)} if native else {k: ISA_FLAGS[k] for k in isas} if isas else ISA_FLAGS
    with tempfile.TemporaryDirectory() as scratch:
        source = str(KERNEL_DIR / "sge_units.cc")
        objects = {isa: str(Path(scratch) / f"sge_units_{isa}.o") for isa in builds}
        compiles = [
            [*cxx, *COMMON_FLAGS, *flags, *floor_flags, f"-DSGE_ISA={isa}", "-c", source, "-o", objects[isa]]
            for isa, flags in builds.items()
        ]
        op_flags = ("-march=native",) if native else ()
        op_flags += ("-DSGE_TRACE",) if trace else ()
        op_flags += ("-DSGE_SWAP_HALVES",) if swap_halves else ()
        if len(builds) == 1:  # no run-time choice: the one build is called directly
            op_flags += (f"-DSGE_ONLY_ISA={next(iter(builds))}",)
        elif set(builds) != set(ISA_FLAGS):
            raise ValueError("a dispatched library needs every build of ISA_FLAGS; pass one ISA for a fixed one")
        op = Path(scratch) / "sge_ort_op.o"
        diagnostics = run_compilers(
            [*compiles, [*cxx, *COMMON_FLAGS, *op_flags, "-c", str(KERNEL_DIR / "sge_ort_op.cc"), "-o", str(op)]]
        )
        for text in filter(str.strip, diagnostics):  # a built library's warnings are shown, never dropped
            logger.warning("the compiler warned while building the fused SGE kernel:\n%s", text.strip())
        linked = Path(scratch) / LIBRARY_NAME
        run_compiler([*cxx, "-shared", "-o", str(linked), str(op), *objects.values()])
        data = linked.read_bytes()
    record_path, library = output_dir / RECORD_NAME, output_dir / LIBRARY_NAME
    record_path.unlink(missing_ok=True)  # a library without its record reads as "not built", never as valid
    _write_atomically(library, data)
    record = {
        "format": RECORD_FORMAT,
        "library": LIBRARY_NAME,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "builds": sorted(builds),
        "compiler": _compiler_version(cxx),
    }
    record |= diagnostic_record(floor=floor, floor_size=floor_size, trace=trace, swap_halves=swap_halves)
    _write_atomically(record_path, (json.dumps(record, indent=2) + "\n").encode())
    logger.info("built %s (%s) with %s", library, ", ".join(sorted(builds)), record["compiler"])
    return library


def record_unavailable(output_dir: Path, reason: str) -> None:
    """Record why there is no library (the install goes on without the fused graph)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / LIBRARY_NAME).unlink(missing_ok=True)
    record = {"format": RECORD_FORMAT, "library": None, "reason": reason}
    _write_atomically(output_dir / RECORD_NAME, (json.dumps(record, indent=2) + "\n").encode())


def build_or_record(output_dir: Path, *, compiler: str | None = None) -> Path | None:
    """What an install does: build the library, or record why it could not (never raises KernelBuildError)."""
    try:
        return build_library(output_dir, compiler=compiler)
    except KernelBuildError as err:
        logger.warning("the fused SGE kernel was not built (%s); the fused ONNX Runtime graph will be unavailable", err)
        record_unavailable(output_dir, str(err))
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=KERNEL_DIR,
        help="default: export/ort_sge/kernels (in place; not with --native)",
    )
    parser.add_argument("--native", action="store_true", help="one -march=native build (speed comparisons only)")
    parser.add_argument("--compiler", help="C++ compiler (default: g++, c++ or clang++ on PATH)")
    args = parser.parse_args(argv)
    if args.native and args.output_dir.resolve() == KERNEL_DIR.resolve():
        parser.error("--native builds for this CPU only and is never installed: give it its own --output-dir")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build_library(args.output_dir, compiler=args.compiler, native=args.native)
    except KernelBuildError as err:
        logger.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
