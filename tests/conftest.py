"""Fixtures every test folder may use."""

import os
from pathlib import Path

import pytest

from export.ort_sge.kernels.build import cpu_flags

# PyTorch's idle OpenMP threads busy-wait: with two test workers on two cores they took the CPU from each other's
# work (`pytest -n 2 tests/export tests/runtime`: 112 s with them spinning, 85 s with PASSIVE). PASSIVE makes them
# sleep; set here, before any worker imports torch (the workers inherit it); a value already set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The tests' oracle for the kernel's dispatcher: the CPU features (as /proc/cpuinfo names them) each build of
# export/ort_sge/kernels needs, which sge_ort_op.cc's choose_build() checks (tests/sgeperf/test_stage_bench.py
# holds the two together).
ISA_CPU_FEATURES = {
    "baseline": frozenset(),
    "avx2": frozenset({"avx2", "fma"}),
    "avx512": frozenset({"avx512f", "avx512vl", "avx512bw", "avx512dq", "avx2", "fma"}),
}


def _has_compiler() -> bool:
    """Whether the kernel's build finds a C++ compiler here (export/ort_sge/kernels/build.py's find_compiler)."""
    from export.ort_sge.kernels.build import KernelBuildError, find_compiler

    try:
        find_compiler()
    except KernelBuildError:
        return False
    return True


# For tests that compile something (a diagnostic build of the kernel, the stage bench, the cache probe).
needs_compiler = pytest.mark.skipif(not _has_compiler(), reason="no C++ compiler (g++, c++ or clang++)")


def dispatched_isa(flags: set[str]) -> str:
    """The build the kernel's dispatcher must pick on a CPU with these flags: the widest whose features it has."""
    return next(isa for isa in ("avx512", "avx2", "baseline") if ISA_CPU_FEATURES[isa] <= flags)


def expected_kernel_build() -> str:
    """The build the installed library must report on this CPU (export.ort_sge.kernels.kernel_build)."""
    return dispatched_isa(cpu_flags())


@pytest.fixture
def fsync_log(monkeypatch) -> list[Path]:
    """The paths os.fsync is called on from now on, in order (each read back from its descriptor via /proc)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name a descriptor's file")
    paths: list[Path] = []
    real = os.fsync

    def record(fd: int) -> None:
        paths.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return paths


def save_photos(folder, names):
    """The bundled photographs ``names`` as PNG files in ``folder``; their paths."""
    from PIL import Image

    from models.transforms import sample_photos

    folder.mkdir(parents=True, exist_ok=True)
    photos = sample_photos(tuple(names))
    for name in names:
        Image.fromarray(photos[name]).save(folder / f"{name}.png")
    return [folder / f"{name}.png" for name in names]
