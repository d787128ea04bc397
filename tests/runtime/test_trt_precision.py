"""The TensorRT runner's ``precision`` option: an engine's precision is fixed when it is built, so a runner takes it
only to confirm what the sidecar records, and otherwise says which engine to build (no TensorRT needed here)."""

import json

import pytest

import runtime
from export.artifacts import Manifest, TensorSpec, write_manifest
from export.int8.roles import PrecisionError
from export.trt.build import record_engine
from runtime.backends.trt import PlanMismatchError, TrtRunner

SPEC_IN, SPEC_OUT = TensorSpec("input", ("batch", 3, 96, 96)), TensorSpec("logits", ("batch", 10))
INFO = {
    "tensorrt_version": "10.13.3",
    "gpu": {"name": "NVIDIA H100", "compute_capability": "9.0"},
    "profile": {"input": "input", "min": [1, 3, 96, 96], "opt": [4, 3, 96, 96], "max": [8, 3, 96, 96]},
    "precision": "fp16",
}


def artifact(directory, *, engine: bool):
    """A manifest-verified directory (stand-in bytes: nothing deserializes them), with or without an fp16 engine."""
    (directory / "model.onnx").write_bytes(b"onnx")
    manifest = Manifest(model="m", deploy="model.onnx", inputs=[SPEC_IN], outputs=[SPEC_OUT])
    manifest.record(directory, "model.onnx", role="model")
    if engine:
        (directory / "model.plan").write_bytes(b"not a real plan")
        (directory / "model.plan.json").write_text(json.dumps(INFO))
        record_engine(manifest, directory, INFO)
    write_manifest(directory, manifest)
    return directory


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


def test_no_engine_says_the_precision_is_chosen_at_build(tmp_path):
    with pytest.raises(
        PlanMismatchError, match=r"precision is fixed when it is built: .*trt-build ARTIFACT --trt int8"
    ):
        runtime.load(artifact(tmp_path, engine=False), "tensorrt", precision="int8")
