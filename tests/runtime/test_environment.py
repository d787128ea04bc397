"""``sge-deploy env`` (runtime/environment.py): each component found or not, with its version or the line that says
what to install; the fused kernel checked as the runner checks it, with the build that runs here; no PyTorch needed."""

import json
from importlib import metadata

import pytest

from export.ort_sge.kernels import KernelUnavailableError
from export.ort_sge.kernels.build import cpu_flags
from runtime import environment
from tests.conftest import expected_kernel_build
from tests.runtime.without_torch import run_script

pytestmark = pytest.mark.timeout(120)


def by_name(components) -> dict:
    return {c["name"]: c for c in components}


def test_a_deploy_only_machine_gets_the_whole_report_and_what_to_install(tmp_path):
    import onnxruntime

    out = tmp_path / "env.json"
    result = run_script("env", "--json", str(out))  # `import torch` fails in this interpreter
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    found = by_name(report["components"])
    assert found["onnxruntime"]["status"] == "ok" and found["onnxruntime"]["version"] == onnxruntime.__version__
    kernel = found["fused SGE kernel (ONNX Runtime)"]
    assert kernel["status"] == "ok" and kernel["detail"].startswith(f"{expected_kernel_build()} build; ")
    assert found["torch"]["status"] == "missing" and "pip install 'sge-deploy[export]'" in found["torch"]["detail"]
    assert set(report["isa"]) <= cpu_flags() and report["machine"]["logical_cpus"] >= 1
    assert "fused SGE kernel (ONNX Runtime)" in result.stdout  # the table, for people


def test_json_to_standard_output_carries_only_the_json(capsys):
    from runtime.commands.env import main

    assert main(["--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["sge_deploy"]  # stdout parses whole: the table went to stderr
    assert "components" in captured.err


def test_a_kernel_that_cannot_run_says_why_in_one_line(monkeypatch):
    from export.ort_sge.kernels import library

    def not_built(directory):
        raise KernelUnavailableError("the fused SGE kernel was not built at install: no C++ compiler found")

    monkeypatch.setattr(library, "kernel_library", not_built)
    component = environment.fused_kernel_component()
    assert component.status == environment.UNAVAILABLE and component.version is None
    assert component.detail == "the fused SGE kernel was not built at install: no C++ compiler found"


def test_a_kernel_the_dynamic_loader_refuses_says_so_in_one_line(monkeypatch, tmp_path):
    from export.ort_sge.kernels import library

    garbage = tmp_path / "libsge_ort_op.so"
    garbage.write_bytes(b"\x7fELF not a shared library" * 8)
    monkeypatch.setattr(library, "kernel_library", lambda directory: garbage)
    component = environment.fused_kernel_component()
    assert component.status == environment.UNAVAILABLE
    assert component.detail.startswith(f"{garbage} cannot be loaded here (OSError: ") and "\n" not in component.detail


def test_packages_are_found_by_their_metadata_or_named_with_the_pip_line():
    found = environment.package("numpy", "numpy", ("numpy",), needed_for="x", install="numpy")
    assert (found.status, found.version, found.detail) == (environment.OK, metadata.version("numpy"), "")
    other = environment.package("pytriton", "pytriton", ("nvidia-pytriton",), needed_for="x", install="x")
    assert other.detail == "nvidia-pytriton"  # the distribution, when its name is not the component's
    absent = environment.package(
        "nothing", "sge_deploy_no_such_module", ("sge-deploy-no-such",), needed_for="x", install="'sge-deploy[x]'"
    )
    assert (absent.status, absent.version) == (environment.MISSING, None)
    assert absent.detail == "not installed: pip install 'sge-deploy[x]'"


def test_a_kernel_directory_from_elsewhere_is_checked_as_the_runner_would(tmp_path):
    import shutil

    from export.ort_sge.kernels import kernel_library
    from export.ort_sge.kernels.build import LIBRARY_NAME, RECORD_NAME
    from runtime.commands.env import main

    installed = kernel_library().parent
    for name in (LIBRARY_NAME, RECORD_NAME):
        shutil.copyfile(installed / name, tmp_path / name)
    out = tmp_path / "env.json"
    assert main(["--kernel-dir", str(tmp_path), "--json", str(out)]) == 0
    kernel = by_name(json.loads(out.read_text())["components"])["fused SGE kernel (ONNX Runtime)"]
    assert kernel["status"] == "ok" and kernel["detail"].endswith(str(tmp_path / LIBRARY_NAME))
    library = tmp_path / LIBRARY_NAME
    library.write_bytes(library.read_bytes()[:4096])  # as a half-copied image layer would leave it
    assert main(["--kernel-dir", str(tmp_path), "--json", str(out)]) == 0
    kernel = by_name(json.loads(out.read_text())["components"])["fused SGE kernel (ONNX Runtime)"]
    assert kernel["status"] == "unavailable" and "is corrupt" in kernel["detail"]


def test_both_onnxruntime_wheels_installed_is_named_as_the_breakage_it_is(monkeypatch):
    monkeypatch.setattr(environment, "installed_version", lambda *names: (names[0], "1.32.0"))  # every wheel there
    component = environment.onnxruntime_component()
    assert component.status == environment.UNAVAILABLE
    assert "onnxruntime and onnxruntime-gpu are both installed" in component.detail


def test_an_installed_package_that_cannot_load_is_unavailable_not_missing(monkeypatch):
    import sys

    import openvino

    monkeypatch.setattr(environment, "importable", lambda module: True)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # its import fails, as with a missing shared library
    component = environment.onnxruntime_component()
    assert component.status == environment.UNAVAILABLE and component.detail.startswith("cannot be imported (")

    def no_plugin():  # as OpenVINO words it: its source location first, then the cause
        raise RuntimeError("Exception from src/inference/src/core.cpp:112:\nFailed to load the CPU plugin\n")

    monkeypatch.setattr(openvino, "Core", no_plugin)
    component = environment.openvino_component()
    assert component.status == environment.UNAVAILABLE
    assert component.detail == "cannot be used (RuntimeError: Failed to load the CPU plugin)"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ({"avx2", "fma", "avx512f", "avx512_vnni"}, "avx512_vnni: 32-bit sums; INT8 graphs with 7- or 8-bit weights"),
        ({"avx2", "fma", "avx_vnni"}, "avx_vnni: 32-bit sums"),
        ({"avx2", "fma"}, "no VNNI: products are paired in 16 bits; graphs with 7-bit weights"),
        (set(), "not an x86 CPU"),
    ],
    ids=["avx512-vnni", "avx-vnni", "avx2-only", "not-x86"],
)
def test_the_int8_row_says_which_weight_ranges_run_as_exported(flags, says):
    component = environment.int8_component(flags)
    assert component.status == environment.OK and component.detail.startswith(says)
    assert ("can saturate" in component.detail) is (flags == {"avx2", "fma"})


def test_a_kernel_dir_that_is_not_a_folder_is_refused(tmp_path, capsys):
    from runtime.commands.env import main

    assert main(["--kernel-dir", str(tmp_path / "typo")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --kernel-dir {tmp_path / 'typo'} is not a folder; give the one holding libsge_ort_op.so\n"
    )
