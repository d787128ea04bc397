"""A tiny artifact with every INT8 graph (sge_resnet18 at 64×64, seeded weights, 8 calibration draws), made once."""

import numpy as np
import pytest

import export
from export.int8.calibration import CalibrationOptions

MODEL = "sge_resnet18"
SIZE = (64, 64)
SGE_BLOCKS = 8  # sge_resnet18: 2 + 2 + 2 + 2 BasicBlocks, each with an SGE


@pytest.fixture(scope="session")
def int8_artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("int8") / MODEL
    result = export.export_model(MODEL, directory, init="random", input_size=SIZE, int8=CalibrationOptions(count=8))
    assert result.manifest_path is not None and result.int8 is not None
    return directory, result


@pytest.fixture(scope="session")
def photos():
    from models.transforms import photo_batch

    return photo_batch(SIZE)


def cosine(a, b):
    a, b = a.astype(np.float64).reshape(len(a), -1), b.astype(np.float64).reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
