"""Fixtures for the OpenVINO tests: the runtime tests' tiny artifact (sge_resnet18, 96×96), an INT8 copy of it, and
the eager FP32 PyTorch reference on random inputs and on the photographs."""

import shutil

import numpy as np
import pytest
import torch

from export.artifacts import load_manifest, write_manifest
from tests.runtime.conftest import SIZE, artifact, photos, reference_model  # noqa: F401 (fixtures)


def eager(model, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


def gate_failures(runner, model, batches, precision: str) -> list[str]:
    """Every way the runner's outputs on ``batches`` miss ``precision``'s parity gate against eager ``model``."""
    from export.parity import compare
    from runtime.backends.ov_precision import GATES

    failures = []
    for batch in batches:
        stats = compare(eager(model, batch), runner.infer(batch))
        failures += GATES[precision].failures(cosine=stats.cosine, rel_l2=stats.rel_l2, max_abs=stats.max_abs)
    return failures


@pytest.fixture(scope="session")
def random_inputs():
    return np.random.default_rng(17).standard_normal((4, 3, *SIZE)).astype(np.float32)


class _Photos:
    """onnxruntime's calibration reader protocol over the photographs, one image per call."""

    def __init__(self, name: str, batch: np.ndarray) -> None:
        self.items = iter([{name: image[None]} for image in batch])

    def get_next(self):
        return next(self.items, None)


def quantize(source, target, photos_batch: np.ndarray) -> None:
    """A Q/DQ model (uint8 activations, per-channel int8 weights) of ``source``, calibrated on the photographs."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    name = onnx.load(str(source), load_external_data=False).graph.input[0].name
    quantize_static(
        str(source),
        str(target),
        _Photos(name, photos_batch),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


@pytest.fixture(scope="session")
def int8_artifact(artifact, photos, tmp_path_factory):  # noqa: F811
    """A copy of the artifact with a Q/DQ ``model.int8.onnx`` recorded under the role "model-int8"."""
    directory = tmp_path_factory.mktemp("int8") / "artifact"
    shutil.copytree(artifact, directory)
    quantize(directory / "model.onnx", directory / "model.int8.onnx", photos)
    manifest = load_manifest(directory)
    manifest.record(directory, "model.int8.onnx", role="model-int8")
    write_manifest(directory, manifest)
    return directory


@pytest.fixture(scope="session")
def sge_extension(tmp_path_factory):
    """The OpenVINO SGE extension, built for this test session (as setup.py builds it at install time)."""
    from export.ov_sge.build import build_extension

    return build_extension(tmp_path_factory.mktemp("ov_sge"))


@pytest.fixture(scope="session")
def calibrated_artifact(tmp_path_factory):
    """The tiny artifact with the export's default weights (init "calibrated"), and its eager model."""
    import export
    import models
    from tests.runtime.conftest import MODEL, SIZE

    directory = tmp_path_factory.mktemp("calibrated")
    export.export_model(MODEL, directory, init="calibrated", input_size=SIZE)
    return directory, models.create_model(MODEL, init="calibrated")
