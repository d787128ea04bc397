"""scripts/export.py --fp16-onnx / --trt on a machine without TensorRT: FP16 ONNX recorded, install hint, exit 4 (no
engine built; 0 with --trt-optional)."""

import sys

import pytest

from export.artifacts import load_manifest
from tests.tensorrt.conftest import script_main

SMALL = ["--model", "sge_resnet18", "--init", "random", "--input-size", "64", "64", "--batch-sizes", "1"]


@pytest.fixture(scope="module")
def export_main():
    return script_main("export")


def test_trt_fp16_without_tensorrt_writes_the_onnx_artifacts_says_how_to_install_and_exits_4(
    export_main, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert export_main([*SMALL, "--output", str(tmp_path), "--trt", "fp16", "--trt-batch", "1", "2", "4"]) == 4
    err = capsys.readouterr().err
    assert "error: no TensorRT engine was built" in err and "--trt-optional" in err
    assert "pip install tensorrt-cu12" in err and "tensorrt-cu13" in err
    manifest = load_manifest(tmp_path, verify=True)  # still a complete, verified artifact
    assert manifest.files["model_fp16.onnx"].role == "model-fp16"
    parity = manifest.parity["fp16_onnx"]
    assert parity["cases"] == 7 and parity["top1_agreement"] == 1.0 and parity["max_rel"] < 0.01
    assert manifest.extra["fp16_onnx"]["policy"]["islands"] == 8
    assert "tensorrt" not in manifest.extra and not (tmp_path / "model.plan").exists()


def test_trt_optional_without_tensorrt_warns_and_exits_0_and_trt_build_exits_4(export_main, tmp_path, capsys):
    # No monkeypatch: this machine's own "no TensorRT" (absent, or tensorrt-stubs without __version__).
    args = [*SMALL, "--output", str(tmp_path), "--trt", "fp32", "--trt-batch", "1", "2", "4", "--trt-optional"]
    assert export_main(args) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "no engine was built" in err and "error:" not in err
    assert not (tmp_path / "model.plan").exists()
    assert script_main("trt_build")([str(tmp_path), "--trt", "fp32", "--trt-batch", "1", "2", "4"]) == 4
    assert capsys.readouterr().err.startswith("error: no engine built: ")


def test_bad_trt_request_is_one_line_and_exit_2(export_main, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert export_main([*SMALL, "--output", str(tmp_path), "--trt", "fp32", "--trt-batch", "8", "4", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --trt-batch needs 1 <= MIN <= OPT <= MAX; got 8 4 1") and "\n" not in err
    assert list(tmp_path.iterdir()) == []  # refused before any work: it failed after every stage, once


@pytest.mark.parametrize("flags", [["--fp16-onnx"], ["--trt", "fp16"], ["--trt", "int8"]])
def test_fp16_of_the_compact_sge_form_is_refused_before_any_file(export_main, tmp_path, capsys, flags):
    # The compact form folds γ into a Mul, so the FP16 converter would find no normalisation to keep in FP32.
    out = tmp_path / "art"
    assert export_main([*SMALL, "--output", str(out), "--sge-form", "compact", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sge-form official" in err and "\n" not in err
    assert not out.exists()


def test_fp16_of_a_compact_artifact_is_refused_by_the_library(export_main, tmp_path):
    from export.fp16 import Fp16ConversionError
    from export.trt.artifact import add_fp16_onnx

    assert export_main([*SMALL, "--output", str(tmp_path), "--sge-form", "compact"]) == 0
    with pytest.raises(Fp16ConversionError, match="SGE in the compact form"):
        add_fp16_onnx(tmp_path)
    assert not (tmp_path / "model_fp16.onnx").exists()


def test_fp16_refusal_follows_the_recorded_layers_not_the_model_name(tmp_path):
    # A module exported under a name without "sge" still carries compact SGE layers: the manifest says so.
    import models
    from export.fp16 import Fp16ConversionError
    from export.pipeline import export_model
    from export.trt.artifact import add_fp16_onnx

    module = models.create_model("sge_resnet18", init="random")
    export_model(module, tmp_path, model_name="mynet", input_size=(64, 64), batch_sizes=(1,), sge_form="compact")
    assert load_manifest(tmp_path).extra["compact_sge_layers"] == 8
    with pytest.raises(Fp16ConversionError, match="SGE in the compact form"):
        add_fp16_onnx(tmp_path)


def test_an_interrupt_in_a_follow_up_step_says_the_new_artifact_is_whole(export_main, tmp_path, monkeypatch, capsys):
    import export.trt.artifact

    def interrupted(directory):
        raise KeyboardInterrupt  # Ctrl-C, or SIGTERM (handled as Ctrl-C), while the FP16 ONNX is made

    monkeypatch.setattr(export.trt.artifact, "add_fp16_onnx", interrupted)
    assert export_main([*SMALL, "--output", str(tmp_path), "--fp16-onnx"]) == 130
    err = capsys.readouterr().err
    assert f"note: the new artifact in {tmp_path} is complete and in place; the FP16 ONNX was not made" in err
    assert f"(run `sge-deploy trt-build {tmp_path}`)" in err and "Triton" not in err  # only the steps asked for
    assert "model_fp16.onnx" not in load_manifest(tmp_path, verify=True).files  # whole, without the step's file
