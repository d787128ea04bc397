"""The TensorRT parts of the Triton repository: FP16 through ONNX Runtime's TensorRT accelerator never hands SGE's
normalisation to TensorRT's FP16 flag, and a plan's config names the TensorRT release and GPU it was built for."""

import pytest

from export.artifacts import load_manifest, write_manifest
from export.triton_config import TensorRTAccelerator, TritonConfigError
from export.triton_repo import plan_parameters, write_triton_repository


def test_fp16_accelerator_ships_the_fp16_islands_onnx(sge_artifact, tmp_path):
    repo = write_triton_repository(sge_artifact, tmp_path / "repo", tensorrt=TensorRTAccelerator("FP16"))
    config = repo.models["sge_resnet18"]
    shipped = (tmp_path / "repo" / "sge_resnet18" / "1" / "model.onnx").read_bytes()
    assert shipped == (sge_artifact / "model_fp16.onnx").read_bytes()
    assert config.tensorrt.precision_mode == "FP32" and "model_fp16.onnx" in config.extra["onnx_source"]
    text = (tmp_path / "repo" / "sge_resnet18" / "config.pbtxt").read_text()
    assert 'key: "precision_mode" value: "FP32"' in text and 'key: "onnx_source"' in text


def test_fp16_or_int8_accelerator_without_islands_onnx_is_refused(sge_artifact, tmp_path):
    manifest = load_manifest(sge_artifact)
    del manifest.files["model_fp16.onnx"]
    write_manifest(sge_artifact, manifest)
    with pytest.raises(TritonConfigError, match=r"islands that must stay FP32.*--fp16-onnx"):
        write_triton_repository(sge_artifact, tmp_path / "repo", tensorrt=TensorRTAccelerator("FP16"))
    with pytest.raises(TritonConfigError, match="serve the TensorRT engine"):
        write_triton_repository(sge_artifact, tmp_path / "repo", tensorrt=TensorRTAccelerator("INT8"))
    fp32 = write_triton_repository(sge_artifact, tmp_path / "repo", tensorrt=TensorRTAccelerator("FP32"))
    assert fp32.models["sge_resnet18"].tensorrt.precision_mode == "FP32"


def test_plan_config_records_what_the_plan_was_built_with(fake_trt, sge_artifact, tmp_path):
    from export.trt.artifact import add_engine
    from export.trt.route import TrtBuildOptions

    add_engine(sge_artifact, options=TrtBuildOptions(precision="fp32", batch=(1, 2, 4)), validate=False)
    repo = write_triton_repository(sge_artifact, tmp_path / "repo", preferred_batch_sizes=(2, 4, 8))
    plan = repo.models["sge_resnet18_tensorrt"]
    # the engine's profile ends at 4: its config keeps the preferred sizes up to and including 4
    assert plan.max_batch_size == 4 and plan.preferred_batch_sizes == (2, 4)
    assert repo.models["sge_resnet18"].preferred_batch_sizes == (2, 4, 8)
    params = plan.extra
    assert params == {
        "tensorrt_version": fake_trt.module.__version__,
        "precision": "fp32",
        "gpu": fake_trt.machine.gpu,
        "compute_capability": "9.0",
    }
    text = (tmp_path / "repo" / "sge_resnet18_tensorrt" / "config.pbtxt").read_text()
    assert f'key: "tensorrt_version" value: {{ string_value: "{fake_trt.module.__version__}" }}' in text
    assert plan_parameters({}) == {}
