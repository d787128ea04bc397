"""The TensorRT runner's checks that need no GPU: plan compatibility, sources, profile limits, missing packages, and
the ``precision`` option (an engine's precision is fixed when it is built: a runner only confirms what the sidecar
records, and otherwise says which engine to build)."""

import json
import sys

import numpy as np
import pytest

import runtime
from export.artifacts import Manifest, TensorSpec, write_manifest
from export.int8.roles import PrecisionError
from export.trt.build import record_engine
from runtime.backends.base import BackendUnavailableError
from runtime.backends.trt import DeviceTimings, PlanMismatchError, TrtRunner, check_plan_compatible

SPEC_IN, SPEC_OUT = TensorSpec("input", ("batch", 3, 96, 96)), TensorSpec("logits", ("batch", 10))
INFO = {
    "tensorrt_version": "10.13.3",
    "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"},
    "profile": {"input": "input", "min": [1, 3, 96, 96], "opt": [4, 3, 96, 96], "max": [8, 3, 96, 96]},
}


def test_plan_compatibility():
    h100 = {"name": "NVIDIA H100", "compute_capability": "9.0"}
    check_plan_compatible(INFO, trt_version="10.13.3.9", gpu=h100)
    with pytest.raises(PlanMismatchError, match=r"built with TensorRT 10\.13\.3, this machine has 11\.1\.0") as err:
        check_plan_compatible(INFO, trt_version="11.1.0", gpu={"name": "NVIDIA L4", "compute_capability": "8.9"})
    assert "compute capability 9.0, this GPU is 8.9" in str(err.value)  # both problems in one message
    with pytest.raises(PlanMismatchError, match=r"built on a NVIDIA H100, this GPU is a NVIDIA GH200"):
        check_plan_compatible(INFO, trt_version="10.13.3", gpu={"name": "NVIDIA GH200", "compute_capability": "9.0"})


def artifact(directory, *, engine: bool):
    """A manifest-verified directory (stand-in bytes: nothing deserializes them), with or without an fp16 engine."""
    (directory / "model.onnx").write_bytes(b"onnx")
    manifest = Manifest(model="m", deploy="model.onnx", inputs=[SPEC_IN], outputs=[SPEC_OUT])
    manifest.record(directory, "model.onnx", role="model")
    if engine:
        fp16 = {**INFO, "precision": "fp16"}
        (directory / "model.plan").write_bytes(b"not a real plan")
        (directory / "model.plan.json").write_text(json.dumps(fp16))
        record_engine(manifest, directory, fp16)
    write_manifest(directory, manifest)
    return directory


@pytest.fixture
def bare_plan(tmp_path):
    # These bytes stand in for a plan file so the runner's file handling can be tested; nothing deserializes them.
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real plan")
    (tmp_path / "model.plan.json").write_text(json.dumps(INFO))
    return plan


def test_bare_plan_spec_from_sidecar_or_from_the_engine(bare_plan, tmp_path):
    runner = TrtRunner(bare_plan)
    assert runner.input_spec == TensorSpec(name="input", shape=("batch", 3, 96, 96))
    assert runner.batch_range == (1, 8)
    (tmp_path / "model.plan.json").unlink()
    runner = TrtRunner(bare_plan)  # a plan from trtexec --saveEngine: described once active
    assert runner.batch_range is None
    with pytest.raises(RuntimeError, match="once active"):
        runner.input_spec  # noqa: B018
    with pytest.raises(FileNotFoundError, match=r"no TensorRT plan at .*missing\.plan"):
        TrtRunner(tmp_path / "missing.plan")


def test_artifact_without_engine_says_how_to_build_one(tmp_path):
    directory = artifact(tmp_path, engine=False)
    with pytest.raises(PlanMismatchError, match=r"no TensorRT engine.*sge-deploy trt-build"):
        TrtRunner(directory)
    with pytest.raises(
        PlanMismatchError, match=r"precision is fixed when it is built: .*trt-build ARTIFACT --trt int8"
    ):
        runtime.load(directory, "tensorrt", precision="int8")


def test_activation_without_tensorrt_names_the_package(monkeypatch, bare_plan):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    runner = TrtRunner(bare_plan)
    with pytest.raises(BackendUnavailableError, match=r"pip install tensorrt-cu12 .* tensorrt-cu13"):
        runner.activate()
    assert not runner.is_active


def test_registered_backend_opens_an_artifact_with_an_engine(monkeypatch, tmp_path):
    runner = runtime.load(artifact(tmp_path, engine=True), backend="trt")  # the alias, through the backend table
    assert isinstance(runner, TrtRunner) and runner.output_spec.shape == ("batch", 10)
    assert runner.plan_path == tmp_path / "model.plan" and runner.batch_range == (1, 8)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="tensorrt-cu12"):
        runner.activate()


@pytest.mark.parametrize("precision", ["int8", "fp32", "bf16"])
def test_another_precision_than_the_engines_is_refused_in_one_line(tmp_path, precision):
    with pytest.raises(
        PrecisionError, match=r"precision is fixed when it is built, and model\.plan was built as fp16"
    ) as err:
        runtime.load(artifact(tmp_path, engine=True), "tensorrt", precision=precision)
    message = str(err.value)
    assert "\n" not in message and "run it without --precision" in message
    build = f"trt-build ARTIFACT --trt {precision}" if precision != "bf16" else "built as fp32, fp16, int8"
    assert build in message


def test_the_engines_own_precision_is_accepted(tmp_path):
    runner = runtime.load(artifact(tmp_path, engine=True), "tensorrt", precision="f16")  # alias of fp16
    assert isinstance(runner, TrtRunner) and runner.info["precision"] == "fp16"
    assert isinstance(runtime.load(tmp_path, "tensorrt"), TrtRunner)  # no precision: whatever the engine is


def test_a_plan_without_sidecar_cannot_confirm_a_precision(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a real plan")  # as trtexec --saveEngine leaves it
    with pytest.raises(PrecisionError, match="has no sidecar recording its precision"):
        TrtRunner(plan, precision="int8")
    with pytest.raises(PrecisionError, match="unknown precision 'int4'"):
        TrtRunner(plan, precision="int4")


def test_device_timings_total():
    t = DeviceTimings(h2d_ms=0.5, compute_ms=2.0, d2h_ms=0.25)
    assert t.to_dict() == {"h2d_ms": 0.5, "compute_ms": 2.0, "d2h_ms": 0.25, "total_ms": 2.75}


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp32_engine_matches_eager_pytorch_on_a_gpu(trt_gpu, tmp_path):
    import torch

    from export.trt.build import build_engine
    from export.trt.route import TrtBuildOptions
    from models.transforms import photo_batch

    model, onnx_path = trt_gpu
    result = build_engine(onnx_path, tmp_path, options=TrtBuildOptions(precision="fp32", batch=(1, 7, 8)))
    x = photo_batch((128, 128))
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    with TrtRunner(result.plan) as runner:
        out = runner.infer(x)
        assert runner.last_timings is not None and runner.last_timings.compute_ms > 0
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-3)
