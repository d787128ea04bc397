"""Fixtures every test folder may use."""

import os
from pathlib import Path

import pytest

from export.ort_sge.kernels.build import ISA_CPU_FEATURES


def dispatched_isa(flags: set[str]) -> str:
    """The build the kernel's dispatcher must pick on a CPU with these flags (the widest whose features it has): the
    tests' oracle, from /proc/cpuinfo's names, against the library's own answer
    (export.ort_sge.kernels.kernel_build)."""
    return next(isa for isa in ("avx512", "avx2", "baseline") if ISA_CPU_FEATURES[isa] <= flags)


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
