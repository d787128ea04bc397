"""scripts/export.py --fp16-onnx / --trt on a machine without TensorRT: FP16 ONNX recorded, install hint, exit 0."""

import importlib.util
import sys
from pathlib import Path

import pytest

from export.artifacts import load_manifest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "export.py"
SMALL = ["--model", "sge_resnet18", "--init", "random", "--input-size", "64", "64", "--batch-sizes", "1"]


@pytest.fixture(scope="module")
def export_main():
    spec = importlib.util.spec_from_file_location("scripts_export", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_trt_fp16_without_tensorrt_writes_the_onnx_artifacts_and_says_how_to_install(
    export_main, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert export_main([*SMALL, "--output", str(tmp_path), "--trt", "fp16", "--trt-batch", "1", "2", "4"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "pip install tensorrt-cu12" in err and "tensorrt-cu13" in err
    manifest = load_manifest(tmp_path, verify=True)  # still a complete, verified artifact
    assert manifest.files["model_fp16.onnx"].role == "model-fp16"
    parity = manifest.parity["fp16_onnx"]
    assert parity["cases"] == 7 and parity["top1_agreement"] == 1.0 and parity["max_rel"] < 0.01
    assert manifest.extra["fp16_onnx"]["policy"]["islands"] == 8
    assert "tensorrt" not in manifest.extra and not (tmp_path / "model.plan").exists()


def test_bad_trt_request_is_one_line_and_exit_2(export_main, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert export_main([*SMALL, "--output", str(tmp_path), "--trt", "fp32", "--trt-batch", "8", "4", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --trt-batch needs 1 <= MIN <= OPT <= MAX; got 8 4 1") and "\n" not in err
    assert load_manifest(tmp_path, verify=True).deploy == "model.onnx"  # the ONNX artifact is intact
