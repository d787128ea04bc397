"""``--model package.module:factory``: a user's own SGE ResNeXt through the export pipeline, rebuilt by the torch
runner and by validate; each mistake in the spec is one line and exit 2, with nothing written."""

import json

import numpy as np
import pytest

import runtime
from models.factory import FactoryError, build_from_factory
from runtime.commands import export as export_command
from runtime.commands import infer as infer_command
from runtime.commands import validate as validate_command

FACTORY = "tests.cli.tiny_resnext:sge_resnext_tiny"
SIZE = ["--input-size", "64", "64", "--batch-sizes", "1,2"]
ATOL = 1e-4  # FP32 eager vs FP32 ONNX Runtime on the same weights: float rounding only (parity measured ~1e-8)


@pytest.fixture(scope="module")
def factory_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("factory") / "resnext"
    assert export_command.main(["--model", FACTORY, *SIZE, "--output", str(out)]) == 0
    return out


def test_the_export_records_the_factory(factory_artifact):
    manifest = json.loads((factory_artifact / "manifest.json").read_text())
    source = manifest["extra"]["source"]
    assert manifest["model"] == "sge_resnext_tiny"
    assert source["factory"] == FACTORY and source["registry"] is False and source["num_classes"] == 10
    assert source["checkpoint_sha256"].startswith("module-state-dict:")
    assert json.loads((factory_artifact / "parity.json").read_text())["passed"] is True


def photos_and_noise(size: int = 64) -> np.ndarray:
    from models.transforms import sample_photos
    from runtime.preprocess import Preprocessing, preprocess_arrays

    photos = preprocess_arrays(list(sample_photos(("astronaut", "coffee")).values()), Preprocessing(size=(size, size)))
    noise = np.random.default_rng().standard_normal((2, 3, size, size)).astype(np.float32)  # fresh on every run
    return np.concatenate([photos, noise])


def test_the_torch_runner_rebuilds_the_factory_model(factory_artifact):
    batch = photos_and_noise()
    with runtime.load(factory_artifact, backend="torch", threads=1) as torch_runner:
        eager = torch_runner.infer(batch)
    with runtime.load(factory_artifact, backend="onnxruntime", threads=1) as ort_runner:
        onnx = ort_runner.infer(batch)
    assert eager.shape == (4, 10)
    np.testing.assert_allclose(eager, onnx, atol=ATOL, rtol=0)
    assert np.ptp(eager, axis=1).min() > 0  # not a constant output: the comparison means something


def test_validate_and_infer_on_the_factory_artifact(factory_artifact, tmp_path, capsys):
    assert validate_command.main([str(factory_artifact), "--batch-sizes", "2"]) == 0
    from PIL import Image

    from models.transforms import sample_photos

    images = []
    for name, photo in sample_photos(("chelsea", "coffee", "astronaut")).items():
        images.append(tmp_path / f"{name}.png")
        Image.fromarray(photo).save(images[-1])
    out = tmp_path / "p.json"
    argv = [str(factory_artifact), *map(str, images), "--backend", "torch", "--batch-size", "2", "--json", str(out)]
    assert infer_command.main(argv) == 0
    predictions = json.loads(out.read_text())["predictions"]
    assert [p["image"] for p in predictions] == list(map(str, images))  # 2 + 1 images, order kept across batches


def test_a_factory_that_is_not_deterministic_is_refused_by_the_torch_runner(tmp_path, capsys):
    out = tmp_path / "unseeded"
    assert export_command.main(["--model", "tests.cli.tiny_resnext:unseeded", *SIZE, "--output", str(out)]) == 0
    with pytest.raises(FactoryError, match="other weights than the exported ones"):
        runtime.load(out, backend="torch").activate()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.cli.no_such_module:f", "no module named 'tests.cli.no_such_module'"),
        ("tests.cli.tiny_resnext:missing", "has no attribute 'missing'; it has"),
        ("os:sep.foo", "has no attribute 'sep.foo'"),  # a str has no __dict__ to list
        ("tests.cli.tiny_resnext:NOT_CALLABLE", "is a int, not callable"),
        ("tests.cli.tiny_resnext:not_a_module", "returned a dict, not a torch.nn.Module"),
        ("tests.cli.tiny_resnext:broken", "the factory raised RuntimeError: weights server unreachable"),
        ("tests.cli.tiny_resnext:exits", "the factory called sys.exit(0); return the model"),
        ("tests.cli.exits_at_import:f", "importing tests.cli.exits_at_import called sys.exit(0); move the module's"),
        ("tests.cli.tiny_resnext:", "expected package.module:factory"),
        ("tests.cli.tiny_resnext:feature_maps", "expected (N, classes) logits from the model; got (2, 4, 62, 62)"),
        ("tests.cli.tiny_resnext:four_channel_input", "the forward pass failed at the example input (2, 3, 64, 64)"),
    ],
)
def test_a_bad_factory_is_one_line_and_exit_2(spec, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert export_command.main(["--model", spec, *SIZE, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("error: ")
    assert not out.exists()


def test_dynamo_exports_a_factory_whose_forward_argument_has_another_name(tmp_path, capfd):
    # torch.export matched the dynamic shapes by the argument name "x": forward(self, images) could not export
    out = tmp_path / "named"
    argv = ["--model", "tests.cli.tiny_resnext:images_argument", *SIZE, "--exporter", "dynamo", "--opset", "18"]
    assert export_command.main([*argv, "--output", str(out)]) == 0
    assert (out / "model.onnx").is_file()
    assert "torchvision is not installed" not in capfd.readouterr().err  # four lines of torch's op registry per run


def test_weights_beyond_one_onnx_file_are_refused_before_the_export():
    from torch import nn

    from export.onnx_export import OnnxExportError, check_fits_one_file

    check_fits_one_file(nn.Linear(1024, 1024))
    huge = nn.Linear(64, 9_000_000, device="meta")  # 2.34 GB of float32 weights, none allocated
    with pytest.raises(OnnxExportError, match=r"2\.18 GiB of weights.*at most 2 GiB"):
        check_fits_one_file(huge)


def test_the_weights_digest_takes_any_dtype():
    import hashlib

    import torch
    from torch import nn

    from models.factory import state_dict_sha256

    layer = nn.Linear(3, 2)
    digest = hashlib.sha256()  # the digest as recorded before: float32 tensors read through numpy
    for key, tensor in sorted(layer.state_dict().items()):
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    reference = state_dict_sha256(layer)
    assert reference == digest.hexdigest()  # existing artifacts' recorded digests still match
    with torch.no_grad():
        layer.weight.add_(1e-3)
    assert state_dict_sha256(layer) != reference
    half = nn.Linear(3, 2).to(torch.bfloat16)  # numpy has no bfloat16: its bytes are read directly
    before = state_dict_sha256(half)
    with torch.no_grad():
        half.weight[0, 0] += 1
    assert state_dict_sha256(half) != before


def test_the_library_call_gives_the_same_module(factory_artifact):
    """The module the library call builds is the one the export recorded: same weights, byte for byte."""
    from models.factory import STATE_DICT_PREFIX, state_dict_sha256

    source = json.loads((factory_artifact / "manifest.json").read_text())["extra"]["source"]
    assert state_dict_sha256(build_from_factory(FACTORY)) == source["checkpoint_sha256"].removeprefix(STATE_DICT_PREFIX)


def test_fp16_of_a_factory_model_with_compact_sge_is_refused_before_any_file(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--model", FACTORY, *SIZE, "--output", str(out), "--sge-form", "compact", "--fp16-onnx"]
    assert export_command.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SGE in the compact form" in err and "--sge-form official" in err
    assert not out.exists()  # refused once the model loaded: no artifact to clean up, none replaced
