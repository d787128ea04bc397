"""A tiny exported artifact (sge_resnet18 at 96×96, seeded weights) shared by the runtime tests.

Made with torch.onnx.export and export.artifacts until the export pipeline lands on main; the manifest is written
last, as the pipeline does.
"""

import numpy as np
import pytest
import torch

import models
from export.artifacts import Manifest, TensorSpec, write_json, write_manifest

MODEL = "sge_resnet18"
SIZE = (96, 96)
INIT = "random"  # seeded and instant; the calibrated default takes seconds and changes nothing tested here
# The export tolerances (issue 3): every backend must match eager PyTorch within these.
ATOL = 1e-4
REL_L2 = 1e-5


def export_artifact(directory, *, model_name=MODEL, size=SIZE):
    model = models.create_model(model_name, init=INIT)
    example = torch.zeros(2, 3, *size)
    onnx_path = directory / "model.onnx"
    torch.onnx.export(
        model,
        (example,),
        str(onnx_path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    config = models.get_config(model_name)
    manifest = Manifest(
        model=model_name,
        deploy="model.onnx",
        inputs=[TensorSpec("input", ("batch", 3, *size))],
        outputs=[TensorSpec("logits", ("batch", config.num_classes), layout="NC")],
        opset=17,
        preprocessing={"input_size": list(size), "mean": list(config.mean), "std": list(config.std), "layout": "NCHW"},
        extra={"init": INIT},
    )
    manifest.record(directory, "model.onnx", role="model")
    write_json(directory / "parity.json", {"note": "test fixture"})
    manifest.record(directory, "parity.json", role="report")
    write_manifest(directory, manifest)
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
