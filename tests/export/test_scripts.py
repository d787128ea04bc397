"""The command lines: the README's main command at full size, --dynamic-hw, validate, and a tampered artifact."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

import models
from export.artifacts import ArtifactError, load_manifest
from export.onnx_export import tensor_dims
from export.validate import onnxruntime_runner


@pytest.mark.slow
def test_main_command_full_size_sge_resnet50(full_artifact):
    out, printed, json_path = full_artifact
    assert "ONNX op counts" in printed and "max abs ≤ 0.0001" in printed and "stage times" in printed
    fused = {"model.sge_fused.onnx", "model.sge_fused.onnx.data", "parity_sge_fused.json"}  # ORT CPU: fused graph
    assert {p.name for p in out.iterdir()} == {"model.onnx", "parity.json", "manifest.json"} | fused
    assert "model.sge_fused.onnx" in printed and "vs onnxruntime (sge_fused)" in printed
    manifest = load_manifest(out, verify=True)
    assert manifest.inputs[0].shape == ("batch", 3, 224, 224) and manifest.parity["passed"] is True
    assert manifest.preprocessing["resize_shorter"] == 256 and manifest.extra["source"]["init"] == "calibrated"
    result = json.loads(json_path.read_text())
    assert result["parity"]["passed"] is True and set(result["stage_seconds"]) >= {"export", "simplify", "parity"}
    assert result["sge_fused_parity"]["passed"] is True and "fused" in result["stage_seconds"]
    assert sum(result["ops_after"].values()) < sum(result["ops_before"].values())


def test_dynamic_hw_non_square(export_script, tmp_path):
    from export.min_side import accepts_side

    out = tmp_path / "dyn"
    argv = ["--model", "sge_resnet18", "--dynamic-hw", "--input-size", "96", "128", "--output", str(out)]
    assert export_script.main([*argv, "--init", "random"]) == 0
    path = out / "model.onnx"
    dims = tensor_dims(onnx.load(str(path), load_external_data=False).graph.input[0])
    assert isinstance(dims[0], str) and dims[1] == 3 and all(isinstance(d, str) for d in dims[2:])
    run = onnxruntime_runner(path, input_name="input")
    model = models.create_model("sge_resnet18", init="random")
    for shape in [(2, 3, 128, 96), (1, 3, 160, 112)]:  # sizes the export never saw
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(run(x), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    # the smallest side it takes is recorded: at 32×32 the last map is 1×1, where SGE's std is undefined
    assert load_manifest(out).inputs[0].min_side == 33
    assert accepts_side(model, 33) and not accepts_side(model, 32)
    import runtime
    from runtime.backends.base import InputMismatchError

    small = np.zeros((1, 3, 32, 64), np.float32)
    for backend in ("onnxruntime", "openvino"):  # NaN on one, meaningless finite logits on the other, before
        with runtime.load(out, backend, threads=1) as runner:
            with pytest.raises(InputMismatchError, match=r"at least 33×33 pixels for this model, .*; got 32×64"):
                runner.infer(small)
            assert runner.infer(np.zeros((1, 3, 33, 40), np.float32)).shape == (1, 1000)


@pytest.mark.slow
def test_validate_reruns_parity_at_an_unseen_batch(validate_script, full_artifact, tmp_path, capsys):
    assert validate_script.main([str(full_artifact[0]), "--batch-sizes", "5", "--json", str(tmp_path / "p.json")]) == 0
    reports = json.loads((tmp_path / "p.json").read_text())
    assert set(reports) == {"model.onnx", "model.sge_fused.onnx"}  # every graph the artifact deploys
    assert all(r["passed"] is True and r["batch_sizes"] == [5] for r in reports.values())
    assert "hashes verified" in capsys.readouterr().out


@pytest.mark.parametrize("victim", ["model.onnx", "parity.json", "model.sge_fused.onnx"])
def test_tampered_artifact_is_refused(validate_script, full_artifact, tmp_path, capsys, victim):
    copy = tmp_path / "copy"
    shutil.copytree(full_artifact[0], copy)
    data = bytearray((copy / victim).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / victim).write_bytes(data)
    with pytest.raises(ArtifactError, match=f"{victim} does not match its recorded sha256"):
        load_manifest(copy)
    assert validate_script.main([str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "re-export" in err and "\n" not in err


def test_directory_without_manifest_is_incomplete(validate_script, full_artifact, tmp_path, capsys):
    copy = tmp_path / "partial"
    shutil.copytree(full_artifact[0], copy)
    (copy / "manifest.json").unlink()
    assert validate_script.main([str(copy)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_checkpoint_export_records_its_hash_and_validates(export_script, validate_script, tmp_path, capsys):
    """--checkpoint end to end: the file's sha256 in metadata and manifest, and validate rebuilds from it."""
    from export.artifacts import file_sha256
    from export.metadata import read_metadata

    checkpoint = tmp_path / "resnet18.pth"
    torch.save({"state_dict": models.create_model("resnet18", init="random").state_dict()}, checkpoint)
    out = tmp_path / "r18"
    argv = ["--model", "resnet18", "--checkpoint", str(checkpoint), "--input-size", "64", "64", "--output", str(out)]
    assert export_script.main([*argv, "--batch-sizes", "1,3"]) == 0
    sha = file_sha256(checkpoint)
    assert read_metadata(onnx.load(str(out / "model.onnx")))["checkpoint_sha256"] == sha
    source = load_manifest(out).extra["source"]
    assert source["checkpoint_sha256"] == sha and source["init"] == "checkpoint"
    assert validate_script.main([str(out), "--batch-sizes", "2"]) == 0
    other = tmp_path / "other.pth"
    torch.save({"state_dict": models.create_model("resnet18", init="calibrated").state_dict()}, other)
    capsys.readouterr()
    assert validate_script.main([str(out), "--checkpoint", str(other)]) == 2  # a moved checkpoint must be the same
    assert f"{other} is not the checkpoint this artifact was exported from" in capsys.readouterr().err
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")  # a different file at the recorded path
    assert validate_script.main([str(out)]) == 2
    assert "is not the checkpoint this artifact was exported from (sha256 differs)" in capsys.readouterr().err


@pytest.mark.slow
def test_validate_without_a_compiler_checks_the_portable_graph(
    validate_script, full_artifact, tmp_path, capsys, monkeypatch
):
    import export.ort_sge.session as ort_session
    from export.ort_sge.kernels import KernelUnavailableError

    def no_compiler(**_):
        raise KernelUnavailableError("the fused SGE kernel is not built")

    monkeypatch.setattr(ort_session, "kernel_library", no_compiler)
    argv = [str(full_artifact[0]), "--batch-sizes", "2", "--json", str(tmp_path / "p.json")]
    assert validate_script.main(argv) == 0
    assert set(json.loads((tmp_path / "p.json").read_text())) == {"model.onnx"}
    assert "model.sge_fused.onnx not checked" in capsys.readouterr().err
