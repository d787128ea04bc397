"""A tiny exported artifact (sge_resnet18 at 96×96, seeded weights) shared by the runtime tests, made by the
export pipeline (``export.export_model``), which checks its own parity against ONNX Runtime before the manifest.
"""

import numpy as np
import pytest

import export
import models

MODEL = "sge_resnet18"
SIZE = (96, 96)
INIT = "random"  # seeded and instant (the calibrated default takes seconds; OpenVINO bf16 is tested on it too)
# The export tolerances (ExportSpec's atol / rtol): every backend must match eager PyTorch within these.
ATOL = 1e-4
REL_L2 = 1e-5


def export_artifact(directory):
    result = export.export_model(MODEL, directory, init=INIT, input_size=SIZE)
    assert result.manifest_path is not None and result.spec.atol == ATOL and result.spec.rtol == REL_L2
    return directory


@pytest.fixture(scope="session")
def artifact(tmp_path_factory):
    return export_artifact(tmp_path_factory.mktemp("artifact"))


@pytest.fixture(scope="session")
def reference_model():
    return models.create_model(MODEL, init=INIT)


@pytest.fixture(scope="session")
def photos():
    """The bundled real photographs at the fixture's size (7, 3, 96, 96)."""
    from models.transforms import photo_batch

    return photo_batch(SIZE)


@pytest.fixture
def random_batch():
    return np.random.default_rng(0).standard_normal((3, 3, *SIZE)).astype(np.float32)


def rel_l2(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))
