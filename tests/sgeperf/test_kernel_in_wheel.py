"""The kernel a wheel ships: `pip wheel` runs setup.py's build of the library, and the installed package finds,
verifies and registers that library from site-packages, with nothing from the checkout.

The other kernel tests run the editable install's in-place library; a Docker image or a deploy venv installs a wheel.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from export.ort_sge.kernels import kernel_build, kernel_library
from export.ort_sge.kernels.build import LIBRARY_NAME, RECORD_NAME
from models.atomic import file_sha256

ROOT = Path(__file__).resolve().parents[2]
KERNEL_IN_WHEEL = "export/ort_sge/kernels/"

# Run where the wheel was unpacked: which files the packages came from, the library the loader vouched for, the
# build its dispatcher picked, and whether ONNX Runtime registers it.
PROBE = """
import json, onnxruntime, export, runtime
from export.ort_sge.kernels import kernel_build, kernel_library
library = kernel_library()
onnxruntime.SessionOptions().register_custom_ops_library(str(library))
print(json.dumps({"export": export.__file__, "runtime": runtime.__file__, "library": str(library),
                  "build": kernel_build(library)}))
"""


def tracked_copy(destination: Path) -> Path:
    """The checkout's tracked files only: no in-place library or build record can reach the wheel from here."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source, target = ROOT / name, destination / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return destination


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> Path:
    source = tracked_copy(tmp_path_factory.mktemp("checkout"))
    assert not (source / KERNEL_IN_WHEEL / LIBRARY_NAME).exists()
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(out)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = out.glob("sge_deploy-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_carries_a_verified_dispatched_library(built_wheel, tmp_path):
    with zipfile.ZipFile(built_wheel) as wheel:
        names = set(wheel.namelist())
        assert {KERNEL_IN_WHEEL + LIBRARY_NAME, KERNEL_IN_WHEEL + RECORD_NAME} <= names
        wheel.extractall(tmp_path, members=[KERNEL_IN_WHEEL + LIBRARY_NAME, KERNEL_IN_WHEEL + RECORD_NAME])
    kernels = tmp_path / KERNEL_IN_WHEEL
    record = json.loads((kernels / RECORD_NAME).read_text())
    assert record["sha256"] == file_sha256(kernels / LIBRARY_NAME)
    # kernel_library refuses a library without run-time dispatch; the wheel's picks what the installed one picks
    assert kernel_build(kernel_library(kernels)) == kernel_build(kernel_library())


@pytest.mark.slow
def test_a_package_unpacked_from_the_wheel_loads_its_own_library(built_wheel, tmp_path):
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(built_wheel) as wheel:
        wheel.extractall(site)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install's finder
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    for package in ("export", "runtime"):
        assert Path(found[package]).is_relative_to(site), found
    assert Path(found["library"]) == site / KERNEL_IN_WHEEL / LIBRARY_NAME
    assert found["build"] == kernel_build(kernel_library())
