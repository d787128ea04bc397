"""Fixtures: small models exported to ONNX with the TorchScript exporter (fast; the graph patterns the FP16 policy
looks for are the same in dynamo exports, which the policy was also checked against)."""

from pathlib import Path

import pytest
import torch

import models


def export_onnx(module: torch.nn.Module, path: Path, *, shape: tuple[int, ...], opset: int = 18) -> Path:
    torch.onnx.export(
        module,
        (torch.zeros(shape),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="session")
def sge18(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = models.create_model("sge_resnet18")
    return model, export_onnx(model, tmp_path_factory.mktemp("sge18") / "model.onnx", shape=(1, 3, 128, 128))


@pytest.fixture
def trt_gpu(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, Path]:
    """Skip unless TensorRT and a CUDA device are present; then the exported sge_resnet18 (exported only then)."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be on this project's machines)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return request.getfixturevalue("sge18")
