"""Fixtures for the serving tests: a small real artifact (resnet18 at 64×64) and an ONNX Runtime runner.

The artifact comes from scripts/export.py (which also writes the Triton repository under test). The runner here is a
minimal real ONNX Runtime runner on the ``Runner`` contract, used until ``runtime.load`` is on main.
"""

import importlib.util
import socket
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from export.artifacts import TensorSpec
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


def load_script(name: str) -> ModuleType:
    """A script as a module (never ``import export``: scripts/export.py would shadow the package)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """resnet18 at 64×64 through the real export pipeline, with ``--triton-repo``: the artifact and the repository."""
    root = tmp_path_factory.mktemp("export")
    argv = ["--model", MODEL, "--init", "random", "--input-size", str(SIZE), str(SIZE), "--batch-sizes", "1,2"]
    argv += ["--output", str(root / "artifact"), "--triton-repo", str(root / "repo")]
    assert load_script("export").main(argv) == 0
    return {"artifact": root / "artifact", "repo": root / "repo"}


@pytest.fixture(scope="session")
def onnx_artifact(exported: dict[str, Path]) -> Path:
    return exported["artifact"]


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
