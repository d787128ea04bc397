"""Engine validation after a build, against the double: parity JSON vs ONNX Runtime FP32 on the photographs, the
inspector's layer JSON, the FP32-islands proof, and scripts/trt_build.py's exit codes. The double's engine runs the
ONNX with ONNX Runtime, so its parity is exact unless a knob makes it wrong: these tests prove the gates and files,
not TensorRT's accuracy (that needs a GPU: README, TensorRT)."""

import json
import sys

import pytest

from export.artifacts import load_manifest
from export.trt import pinning
from export.trt.inspect import check_fp32_islands, compare_outputs, tensor_precision
from tests.tensorrt.conftest import script_main


@pytest.fixture(scope="module")
def trt_build_main():
    return script_main("trt_build")


def test_build_from_an_artifact_records_the_validation_it_ran(fake_trt, sge_artifact, trt_build_main, capsys):
    args = [str(sge_artifact), "--trt", "fp16", "--trt-batch", "1", "4", "8", "--trt-opt-level", "4"]
    assert trt_build_main([*args, "--trt-log", str(sge_artifact / "build.log")]) == 0
    out = capsys.readouterr().out
    assert "vs ONNX Runtime FP32 on 7 photographs" in out and "SGE normalisation in FP32: proven" in out
    manifest = load_manifest(sge_artifact, verify=True)
    roles = {entry.role for entry in manifest.files.values()}
    assert {"engine", "engine-info", "engine-parity", "engine-layers"} <= roles
    parity = json.loads((sge_artifact / "model.plan.parity.json").read_text())
    # "passed" here is ONNX Runtime against ONNX Runtime (the double's engine): what is proven is that the validation
    # ran every photograph and recorded its verdict, gate and precision, not any TensorRT accuracy
    assert parity["parity"]["passed"] and parity["parity"]["cases"] == 7
    assert parity["parity"]["gate"]["max_rel"] == 0.02 and parity["parity"]["precision"] == "fp16"
    islands = parity["fp32_islands"]
    assert islands["proven"] and islands["layers_checked"] >= islands["island_nodes"] > 8  # 8 SGE layers
    assert islands["nodes_not_found"] == []
    layers = json.loads((sge_artifact / "model.plan.layers.json").read_text())["Layers"]
    formats = [o.get("Format/Datatype", o.get("DataType")) for layer in layers for o in layer["Outputs"]]
    assert formats and "N/A due to dynamic shapes" not in formats
    assert all(("DataType" in o) == (fake_trt.major == 11) for layer in layers for o in layer["Outputs"])
    calls = fake_trt.machine.calls
    assert calls.index("IExecutionContext.set_input_shape") < calls.index("EngineInspector.execution_context=")
    assert manifest.parity["tensorrt"]["passed"] and manifest.extra["tensorrt"]["gpu"]["compute_capability"] == "9.0"
    assert json.loads((sge_artifact / "model.plan.json").read_text())["opt_level"] == 4


def test_islands_that_leave_fp32_fail_validation_with_exit_1(
    fake_trt, sge_artifact, trt_build_main, monkeypatch, capsys
):
    if fake_trt.major != 10:
        pytest.skip("only weak typing (10.x) can move a layer out of its island")
    manifest = load_manifest(sge_artifact)
    del manifest.files["model_fp16.onnx"]  # force the weakly typed route
    from export.artifacts import write_manifest

    write_manifest(sge_artifact, manifest)

    def names_only(layers, nodes, tensors):  # the matching before this fix: names only, no metadata or suffixes
        return [layer.name for layer in layers if layer.name in nodes]

    monkeypatch.setattr(pinning, "fp32_layer_names", names_only)
    assert trt_build_main([str(sge_artifact), "--trt", "fp16", "--trt-batch", "1", "4", "8"]) == 1
    err = capsys.readouterr().err
    assert "SGE normalisation layers are not FP32" in err and "(Unnamed Layer*" in err
    report = json.loads((sge_artifact / "model.plan.parity.json").read_text())["fp32_islands"]
    assert report["not_fp32"] and not report["proven"]  # the evidence stays beside the plan


def test_a_wrong_engine_fails_parity_with_exit_1(fake_trt, sge_artifact, trt_build_main, capsys):
    fake_trt.machine.output_noise = 0.5
    assert trt_build_main([str(sge_artifact), "--trt", "fp32", "--trt-batch", "1", "4", "8"]) == 1
    assert "fp32 engine vs ONNX Runtime FP32 on 7 photographs" in capsys.readouterr().err
    assert not json.loads((sge_artifact / "model.plan.parity.json").read_text())["parity"]["passed"]


def test_script_without_tensorrt_is_exit_4_a_bad_request_exit_2(sge_artifact, trt_build_main, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert trt_build_main([str(sge_artifact), "--trt", "fp16"]) == 4  # EXIT_NO_ENGINE
    assert "tensorrt-cu12" in capsys.readouterr().err and not (sge_artifact / "model.plan").exists()
    assert trt_build_main([str(sge_artifact), "--trt", "fp16", "--trt-batch", "4", "2", "1"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as usage:  # a usage error at parsing; it was exit 4, checked after the import
        trt_build_main([str(sge_artifact), "--trt", "fp16", "--trt-opt-level", "7"])
    assert usage.value.code == 2 and "--trt-opt-level: invalid choice: 7" in capsys.readouterr().err


def test_gates_and_layer_formats():
    import numpy as np

    ref = np.array([[1.0, 5.0, 2.0], [3.0, 0.0, 1.0]])
    assert compare_outputs(ref + 1e-5, ref, precision="fp32").passed
    assert not compare_outputs(ref + 0.2, ref, precision="fp16").passed  # 4 % of the largest logit
    assert compare_outputs(ref + 0.05, ref, precision="fp16").passed
    flipped = ref[:, [1, 0, 2]]
    assert not compare_outputs(flipped, ref, precision="int8").passed
    assert not compare_outputs(ref * np.nan, ref, precision="int8").passed
    formats = ["Row major linear FP32", "Channel major FP16 format where channel % 8 == 0", "Half", "Float", "Int8"]
    assert [tensor_precision(f) for f in formats] == ["fp32", "fp16", "fp16", "fp32", "int8"]
    assert tensor_precision("BFloat16") == "bf16"  # not "float": FP32
    assert tensor_precision("N/A due to dynamic shapes") == "unknown"


def test_island_check_reads_the_11x_split_format_and_datatype_fields():
    output = {"Name": "t", "Format": "Row major linear FP16 format (kLINEAR)", "DataType": "Half"}
    info = {"Layers": [{"Name": "/sge/Div", "Outputs": [output]}]}
    report = check_fp32_islands(info, {"/sge/Div"})
    assert report.not_fp32 == [{"layer": "/sge/Div", "tensor": "t", "precision": "fp16"}] and not report.unknown


def test_island_check_finds_an_unnamed_nodes_layers_by_the_parsers_name():
    # onnx-tensorrt names an unnamed node's layers node_of_<first output>; the plan names it Div_12
    output = {"Name": "d", "Format/Datatype": "Row major linear FP16 format (kLINEAR)"}
    info = {"Layers": [{"Name": "node_of_d", "Metadata": "[ONNX Layer: node_of_d]", "Outputs": [output]}]}
    report = check_fp32_islands(info, {"Div_12"}, {"node_of_d": "Div_12"})
    assert report.not_fp32 == [{"layer": "node_of_d", "tensor": "d", "precision": "fp16"}]
    assert report.nodes_not_found == [] and report.layers_checked == 1
    assert check_fp32_islands(info, {"Div_12"}).nodes_not_found == ["Div_12"]  # without the alias: never seen


@pytest.mark.parametrize("profile", [("8", "8", "8"), ("4", "4", "4")])
def test_a_profile_min_above_the_last_photographs_still_validates(fake_trt, sge_artifact, trt_build_main, profile):
    # 7 photographs in chunks of MAX: the last chunk (7 % 8 = 7, 7 % 4 = 3) is below MIN and must be padded
    assert trt_build_main([str(sge_artifact), "--trt", "fp32", "--trt-batch", *profile]) == 0
    parity = json.loads((sge_artifact / "model.plan.parity.json").read_text())["parity"]
    assert parity["passed"] and parity["cases"] == 7
    load_manifest(sge_artifact, verify=True)


def test_a_validation_that_raises_still_records_the_new_plan(fake_trt, sge_artifact, trt_build_main, monkeypatch):
    from export.trt import artifact

    assert trt_build_main([str(sge_artifact), "--trt", "fp32", "--trt-batch", "1", "4", "8"]) == 0
    first = load_manifest(sge_artifact)  # the first plan was validated: what the second must not inherit
    assert "tensorrt" in first.parity and (sge_artifact / "model.plan.parity.json").exists()

    def broken(*args, **kwargs):
        raise OSError("disk full while writing the parity report")

    monkeypatch.setattr(artifact, "validate_engine", broken)
    assert trt_build_main([str(sge_artifact), "--trt", "fp32", "--trt-batch", "1", "2", "4"]) == 2
    manifest = load_manifest(sge_artifact, verify=True)  # the rebuilt plan's hashes, not the first one's
    assert manifest.extra["tensorrt"]["profile"]["max"][0] == 4
    # the first plan's verdict and reports do not vouch for the unvalidated second one
    assert "tensorrt" not in manifest.parity and not (sge_artifact / "model.plan.parity.json").exists()
    assert {entry.role for entry in manifest.files.values()}.isdisjoint({"engine-parity", "engine-layers"})


def test_island_check_reads_fused_names_and_metadata():
    info = {
        "Layers": [
            {"Name": "/conv/Conv + /relu/Relu", "Outputs": [{"Format/Datatype": "Half"}]},
            {"Name": "/sge/Sub + /sge/Mul", "Outputs": [{"Name": "t", "Format/Datatype": "Row major linear FP16"}]},
            {"Name": "x", "Metadata": "[ONNX Layer: /sge/Div]", "Outputs": [{"Format/Datatype": "Float"}]},
            {
                "Name": "{ForeignNode[/sge/Sqrt.../conv2/Conv]}",
                "Metadata": "[ONNX Layer: /sge/Sqrt]",
                "Outputs": [{"Format/Datatype": "Half"}],
            },  # a region ending in FP16: no verdict on its insides
        ]
    }
    report = check_fp32_islands(info, {"/sge/Sub", "/sge/Div", "/sge/Sqrt"})
    assert report.layers_checked == 2 and report.not_fp32 == [
        {"layer": "/sge/Sub + /sge/Mul", "tensor": "t", "precision": "fp16"}
    ]
    assert report.nodes_not_found == ["/sge/Sqrt"] and report.opaque and not report.proven
    names_only = check_fp32_islands({"Layers": ["/sge/Sub"]}, {"/sge/Sub"})
    assert not names_only.proven and "DETAILED" in names_only.unknown[0]


def test_export_refuses_a_bad_trt_batch_and_a_triton_repo_file_before_any_work(tmp_path, capsys):
    from runtime.commands.export import main as export_main

    out = tmp_path / "out"
    argv = ["--model", "resnet18", "--input-size", "32", "32", "--output", str(out)]
    assert export_main([*argv, "--trt", "fp16", "--trt-batch", "0", "1", "2"]) == 2  # it failed after every stage
    assert "--trt-batch needs 1 <= MIN <= OPT <= MAX; got 0 1 2" in capsys.readouterr().err and not out.exists()
    served = [*argv, "--trt", "fp16", "--trt-batch", "4", "8", "32", "--triton-repo", str(tmp_path / "served")]
    assert export_main(served) == 2  # Triton's batcher sends batches from 1: the engine would refuse them
    assert "give --trt-batch 1 8 32" in capsys.readouterr().err and not out.exists()
    (tmp_path / "repo").write_text("a file")
    assert export_main([*argv, "--triton-repo", str(tmp_path / "repo")]) == 2  # was "[Errno 17] File exists"
    assert "--triton-repo" in capsys.readouterr().err and not out.exists()
