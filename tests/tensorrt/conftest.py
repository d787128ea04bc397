"""Fixtures: small models exported to ONNX with the TorchScript exporter (fast; the graph patterns the FP16 policy
looks for are the same in dynamo exports, which the policy was also checked against)."""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import models
from tests.export.conftest import load_script


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
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be on this project's machines)")
    if not hasattr(trt, "__version__"):
        pytest.skip("only the TensorRT type stubs are installed, not TensorRT")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return request.getfixturevalue("sge18")


@dataclass
class FakeTrt:
    """The fake ``tensorrt`` installed in sys.modules, its machine (calls, knobs) and which surface it has."""

    module: Any
    machine: Any
    major: int


@pytest.fixture(scope="session")
def trt_surfaces() -> dict[int, Any]:
    from tests.tensorrt.trt_surface import StubsNotInstalledError, surface_10, surface_11

    try:
        ten = surface_10()
    except StubsNotInstalledError as err:
        pytest.skip(str(err))
    return {10: ten, 11: surface_11(ten)}


@pytest.fixture(params=[10, 11], ids=["trt10.13", "trt11"])
def fake_trt(request: pytest.FixtureRequest, trt_surfaces: dict[int, Any], monkeypatch: pytest.MonkeyPatch) -> FakeTrt:
    """The API-faithful double of TensorRT 10.13 or 11.x, with host memory for the GPU (never TensorRT itself)."""
    from tests.tensorrt.fake_machine import FakeMachine
    from tests.tensorrt.fake_tensorrt import make_tensorrt
    from tests.tensorrt.host_cuda import HostCuda, host_upload

    machine = FakeMachine()
    module = make_tensorrt(trt_surfaces[request.param], machine)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr("export.trt.build.gpu_info", lambda: HostCuda(machine).identity())
    monkeypatch.setattr("runtime.backends.trt.open_cuda_device", lambda: HostCuda(machine))
    monkeypatch.setattr("export.trt.calibrate.cuda_upload", lambda batch: host_upload(batch, machine))
    return FakeTrt(module, machine, request.param)


@pytest.fixture(scope="session")
def sge_artifact_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified sge_resnet18 artifact at 64×64 with its FP16-islands ONNX (exported once per session)."""
    from export.pipeline import export_model
    from export.trt.artifact import add_fp16_onnx

    out = tmp_path_factory.mktemp("sge_artifact") / "sge_resnet18"
    export_model("sge_resnet18", out, init="random", input_size=(64, 64), batch_sizes=(1,), fused_sge=False)
    add_fp16_onnx(out)
    return out


@pytest.fixture
def sge_artifact(sge_artifact_src: Path, tmp_path: Path) -> Path:
    """A private copy of the session's artifact, free to be changed by the test."""
    import shutil

    return Path(shutil.copytree(sge_artifact_src, tmp_path / "artifact"))


def script_main(name: str) -> Callable[..., int]:
    return load_script(name).main
