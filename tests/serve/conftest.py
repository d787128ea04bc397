"""Fixtures for the serving tests: a small real artifact (resnet18 at 64×64) from scripts/export.py, which also
writes the Triton model repository under test."""

import importlib.util
import socket
from pathlib import Path
from types import ModuleType

import pytest

from export.artifacts import TensorSpec

MODEL = "resnet18"
SIZE = 64
INPUT = TensorSpec("input", ("batch", 3, SIZE, SIZE), "float32", "NCHW")
OUTPUT = TensorSpec("logits", ("batch", 1000), "float32", "NC")


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
