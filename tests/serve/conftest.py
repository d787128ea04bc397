"""Fixtures for the serving tests: a small real ONNX artifact (resnet18 at 64×64) and an ONNX Runtime runner.

The runner here is a minimal real ONNX Runtime runner on the ``Runner`` contract, used until ``runtime.load`` is on
main; the artifact is exported with ``torch.onnx.export`` and described by a manifest from ``export.artifacts``.
"""

import socket
from pathlib import Path

import numpy as np
import pytest

from export.artifacts import Manifest, TensorSpec, write_manifest
from runtime.backends.base import Runner

MODEL = "resnet18"
SIZE = 64
INPUT = TensorSpec("input", ("batch", 3, SIZE, SIZE), "float32", "NCHW")
OUTPUT = TensorSpec("logits", ("batch", 1000), "float32", "NC")


class OrtTestRunner(Runner):
    name = "onnxruntime"

    def __init__(self, model_path: Path, *, threads: int = 1) -> None:
        super().__init__()
        self.model_path = model_path
        self.threads = threads
        self._session = None

    @property
    def input_spec(self) -> TensorSpec:
        return INPUT

    @property
    def output_spec(self) -> TensorSpec:
        return OUTPUT

    def _activate_impl(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])

    def _deactivate_impl(self) -> None:
        self._session = None

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([OUTPUT.name], {INPUT.name: batch})[0]


@pytest.fixture(scope="session")
def onnx_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    import models

    directory = tmp_path_factory.mktemp("artifact")
    model = models.create_model(MODEL, init="random")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, SIZE, SIZE),),
            str(directory / "model.onnx"),
            input_names=[INPUT.name],
            output_names=[OUTPUT.name],
            dynamic_axes={INPUT.name: {0: "batch"}, OUTPUT.name: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    manifest = Manifest(model=MODEL, deploy="model.onnx", inputs=[INPUT], outputs=[OUTPUT], opset=17)
    manifest.record(directory, "model.onnx", role="model")
    write_manifest(directory, manifest)
    return directory


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (bound together, then released)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
