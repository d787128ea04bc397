"""The AVX2 view (export/ort_sge/kernels/avx2_view.py): a process that sees no AVX-512 runs ONNX Runtime's 8-lane NCHWc
graphs and the kernel's AVX2 build, so an AVX-512 machine tests the AVX2 paths end to end; other faults still end
the process as they would."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from export.ort_sge.kernels import avx2_view
from export.ort_sge.kernels.build import KernelBuildError, hidden_by_avx2_view
from export.ort_sge.nchwc import nchwc_block_size

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = avx2_view.avx2_view_problem()
needs_view = pytest.mark.skipif(PROBLEM is not None, reason=f"the AVX2 view cannot run here: {PROBLEM}")

# What the AVX2 paths are tested by: the 8-lane graph of the compact form, the kernel inside ORT's blocked graphs
# (against the float64 reference), the fused export end to end with its parity gates, and OpenVINO's SGE forms in
# f32, in a bf16 graph (which runs f32 without native bf16) and inside an INT8 graph (which saturates 8-bit weights
# without VNNI: tests/int8/test_weight_range.py).
AVX2_PATH_TESTS = (
    "tests/sgeperf/test_export.py::test_compact_graph_runs_in_nchwc",
    "tests/sgeperf/test_fused_kernel.py",
    "tests/sgeperf/test_fused_export.py",
    "tests/openvino/test_sge_op.py",
    "tests/openvino/test_sge_native.py",
)

WHAT_THE_PROCESS_SEES = """
import json
import numpy.core._multiarray_umath as numpy_cpu
from export.ort_sge.kernels import kernel_build, kernel_library
from export.ort_sge.kernels.build import avx2_view_active, cpu_flags
from export.ort_sge.nchwc import nchwc_block_size
features = numpy_cpu.__cpu_features__
print(json.dumps({
    "active": avx2_view_active(),
    "numpy_avx512": sorted(k for k, on in features.items() if k.startswith("AVX512") and on),
    "numpy_avx2_fma": features["AVX2"] and features["FMA3"],
    "flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))),
    "nchwc_block": nchwc_block_size(),
    "kernel_build": kernel_build(kernel_library()),
}))
"""


@pytest.fixture(scope="module")
def view_library(tmp_path_factory) -> Path:
    return avx2_view.build_avx2_view(tmp_path_factory.mktemp("avx2-view"))


def run_in_view(library: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = avx2_view.avx2_view_env(library)
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, check=False, **kwargs)


@needs_view
def test_every_reader_of_cpuid_sees_avx2_without_avx512(view_library):
    """numpy's own CPUID probe, ORT's layout choice, the kernel's dispatcher and cpu_flags() all agree."""
    result = run_in_view(view_library, sys.executable, "-c", WHAT_THE_PROCESS_SEES, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["active"] and seen["numpy_avx2_fma"]
    assert seen["numpy_avx512"] == []
    assert {"avx2", "fma"} <= set(seen["flags"]) and not any(hidden_by_avx2_view(f) for f in seen["flags"])
    assert seen["nchwc_block"] == 8
    assert seen["kernel_build"] == "avx2"


TRAPS_WHILE_RUNNING = """
import ctypes, json, sys
import numpy as np
from export.ort_sge.session import cpu_session, plan_session
traps = ctypes.CDLL(None).avx2_view_traps  # the preloaded view's counter
traps.restype = ctypes.c_ulong
session = cpu_session(plan_session(sys.argv[1]), threads=2)
x = {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), np.float32)}
session.run(None, x)
opened = traps()
for _ in range(20):
    session.run(None, x)
print(json.dumps({"opened": opened, "after_runs": traps()}))
"""


@needs_view
def test_the_view_answers_cpuid_while_a_session_opens_not_while_it_runs(view_library, tmp_path):
    """What makes timings under the view those of the AVX2 code: no CPUID trap (a signal, two syscalls) per run."""
    from export.onnx_export import export_onnx
    from export.ort_sge.graph import fuse_sge_residual
    from export.spec import ExportSpec
    from models import create_model

    fused, _ = fuse_sge_residual(create_model("sge_resnet18", init="random"))
    path = export_onnx(fused, tmp_path / "fused.onnx", spec=ExportSpec(input_size=(64, 64)))
    result = run_in_view(view_library, sys.executable, "-c", TRAPS_WHILE_RUNNING, str(path), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    counts = json.loads(result.stdout)
    assert counts["opened"] > 0 and counts["after_runs"] == counts["opened"], counts


@needs_view
@pytest.mark.parametrize("faulthandler", [False, True], ids=["default-action", "python-faulthandler"])
def test_other_faults_still_end_the_process(view_library, faulthandler):
    """A real segmentation fault is not taken for a CPUID: the process's own handler runs, or the default action."""
    flags = ["-X", "faulthandler"] if faulthandler else []
    crash = "import ctypes; ctypes.string_at(0)"
    result = run_in_view(view_library, sys.executable, *flags, "-c", crash, timeout=60)
    assert result.returncode == -11  # SIGSEGV
    assert ("Fatal Python error: Segmentation fault" in result.stderr) is faulthandler


@needs_view
@pytest.mark.skipif(nchwc_block_size() == 8, reason="this CPU runs the AVX2 paths in the suite itself")
def test_avx2_paths_pass_in_the_view(view_library, tmp_path):
    """The AVX2 paths' tests, run where they would skip or take the AVX-512 path otherwise: all pass, none skip."""
    report = tmp_path / "junit.xml"
    # -n 0: the child runs its tests itself (two workers of its own beside the suite's two would only contend)
    pytest_args = ["-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'runs'}"]
    result = run_in_view(
        view_library, sys.executable, *pytest_args, f"--junitxml={report}", *AVX2_PATH_TESTS, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:]
    suite = ElementTree.parse(report).getroot().find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["tests"] >= 150 and counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts


def test_the_view_says_why_it_cannot_run(monkeypatch):
    monkeypatch.setattr(avx2_view, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})
    monkeypatch.setattr(avx2_view.platform, "system", lambda: "Linux")
    monkeypatch.setattr(avx2_view.platform, "machine", lambda: "x86_64")
    assert "no cpuid_fault" in avx2_view.avx2_view_problem()
    with pytest.raises(KernelBuildError, match=r"the AVX2 view cannot run here: .*CPUID faulting"):
        avx2_view.build_avx2_view(Path("/nonexistent"))
    monkeypatch.setattr(avx2_view.platform, "machine", lambda: "aarch64")
    assert "x86-64" in avx2_view.avx2_view_problem()


def test_the_flags_it_hides():
    assert all(map(hidden_by_avx2_view, ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx_vnni")))
    assert not any(map(hidden_by_avx2_view, ("avx2", "fma", "avx", "f16c", "vaes", "cpuid_fault")))


def test_the_child_gets_the_library_first_in_ld_preload():
    env = avx2_view.avx2_view_env(Path("/v/libavx2_view.so"), {"LD_PRELOAD": "/other.so", "HOME": "/h"})
    assert env == {"LD_PRELOAD": "/v/libavx2_view.so /other.so", "HOME": "/h"}
    assert avx2_view.avx2_view_env(Path("/v/l.so"), {})["LD_PRELOAD"] == "/v/l.so"
    outer = {"LD_PRELOAD": "/a.so:/outer/libavx2_view.so /b.so"}  # a suite already under the view: one view, not two
    assert avx2_view.avx2_view_env(Path("/v/libavx2_view.so"), outer)["LD_PRELOAD"] == "/v/libavx2_view.so /a.so /b.so"


@needs_view
def test_the_command_line_runs_a_command_in_the_view_and_passes_its_exit_status():
    check = "from export.ort_sge.kernels import build; raise SystemExit(7 if build.avx2_view_active() else 1)"
    command = [sys.executable, "-m", "export.ort_sge.kernels.avx2_view", sys.executable, "-c", check]
    assert subprocess.run(command, cwd=ROOT, check=False, timeout=120).returncode == 7
    usage = subprocess.run(command[:3], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    assert usage.returncode == 2 and "usage: python -m export.ort_sge.kernels.avx2_view COMMAND" in usage.stdout
