"""Every CPU backend against eager PyTorch, input checks, missing packages, bare ONNX files, tampered artifacts."""

import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch

import models
import runtime
from export.artifacts import ArtifactError
from runtime.backends.base import BackendUnavailableError, InputMismatchError
from tests.runtime.conftest import ATOL, MODEL, REL_L2, rel_l2

CPU_BACKENDS = ["torch", "onnxruntime", "openvino"]


def reference(model, batch):
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


@pytest.fixture(scope="module")
def runners(artifact):
    opened = {
        name: runtime.load(artifact, backend=name, threads=1, check_finite=True).activate() for name in CPU_BACKENDS
    }
    yield opened
    for runner in opened.values():
        runner.deactivate()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("inputs", ["random", "photos"])
def test_backend_matches_eager_pytorch(runners, reference_model, backend, inputs, random_batch, photos):
    batch = random_batch if inputs == "random" else photos
    expected = reference(reference_model, batch)
    got = runners[backend].infer(batch)
    assert got.shape == expected.shape == (len(batch), 1000)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= ATOL
    assert rel_l2(got, expected) <= REL_L2
    # the weights are not a constant function: different photographs give different logits
    assert np.abs(expected[0] - expected[1]).max() > 1e-2


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bad_inputs_raise_clear_errors(runners, backend, random_batch):
    runner = runners[backend]
    with pytest.raises(InputMismatchError, match="must be float32; got float64"):
        runner.infer(random_batch.astype(np.float64))
    with pytest.raises(InputMismatchError, match=r"must have shape \(batch, 3, 96, 96\); got \(3, 3, 64, 64\)"):
        runner.infer(random_batch[:, :, :64, :64].copy())
    with pytest.raises(InputMismatchError, match="batch dimension"):
        runner.infer(random_batch[0])
    with pytest.raises(InputMismatchError, match="looks NHWC"):
        runner.infer(random_batch.transpose(0, 2, 3, 1).copy())
    with pytest.raises(InputMismatchError, match="numpy array"):
        runner.infer(torch.from_numpy(random_batch))
    nan_batch = random_batch.copy()
    nan_batch[1, 0, 5, 5] = np.nan
    with pytest.raises(InputMismatchError, match="1 NaN/Inf"):
        runner.infer(nan_batch)
    with pytest.raises(InputMismatchError, match="has an empty batch"):
        runner.infer(random_batch[:0])


def test_inactive_runner_says_how_to_activate(artifact, random_batch):
    runner = runtime.load(artifact, backend="onnxruntime")
    with pytest.raises(RuntimeError, match="with runner"):
        runner.infer(random_batch)


def test_context_manager_and_describe(artifact, random_batch):
    with runtime.load(artifact, backend="ort", threads=1, allow_spinning=False) as runner:
        assert runner.is_active
        assert runner.infer(random_batch[:1]).shape == (1, 1000)
        described = runner.describe()
    assert not runner.is_active
    assert described["backend"] == "onnxruntime" and described["providers"] == ["CPUExecutionProvider"]
    assert described["input"]["shape"] == ["batch", 3, 96, 96] and described["allow_spinning"] is False


def test_unknown_backend_lists_the_choices(artifact, monkeypatch):
    with pytest.raises(runtime.UnknownBackendError, match=r"did you mean openvino.*choose from torch, onnxruntime"):
        runtime.load(artifact, backend="openvin")
    monkeypatch.delitem(runtime.BACKENDS, "tensorrt")  # an alias of an unregistered backend is never suggested
    with pytest.raises(runtime.UnknownBackendError) as err:
        runtime.load(artifact, backend="tensorrt")
    assert not re.search(r"\btrt\b", str(err.value))


@pytest.mark.parametrize(
    ("backend", "module", "package"),
    [
        ("openvino", "openvino", "pip install 'sge-deploy[openvino]'"),
        ("onnxruntime", "onnxruntime", "pip install 'sge-deploy[onnxruntime]'"),
    ],
)
def test_missing_package_is_named(artifact, monkeypatch, backend, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    runner = runtime.load(artifact, backend=backend)
    with pytest.raises(BackendUnavailableError, match=re.escape(package)) as info:
        runner.activate()
    assert isinstance(info.value, ImportError)


def test_cuda_provider_missing_names_onnxruntime_gpu(artifact):
    runner = runtime.load(artifact, backend="onnxruntime", device="cuda")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        runner.activate()


def test_cuda_provider_runs_strict_fp32_unless_asked(artifact):
    """FP32 on the CUDA provider is FP32: its default TF32 convolutions erred 6.8e-4 relative L2 against eager FP32
    on an H200 (scripts/reports/gpu_parity_sge_resnet50.json), against 6.6e-7 with use_tf32=0."""
    (name, options), *_ = runtime.load(artifact, backend="onnxruntime", device="cuda").providers()
    assert (name, options) == ("CUDAExecutionProvider", {"device_id": 0, "use_tf32": 0})
    runner = runtime.load(artifact, backend="onnxruntime", device="cuda", provider_options={"use_tf32": 1})
    assert runner.providers()[0][1]["use_tf32"] == 1


def test_torch_on_cuda_without_a_gpu_says_so(artifact):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        runtime.load(artifact, backend="torch", device="cuda").activate()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_bare_onnx_file_works(artifact, reference_model, backend, photos):
    """torch builds the model the file names with the weights its metadata records (default-weights:random)."""
    options = {"model": MODEL} if backend == "torch" else {}
    with runtime.load(artifact / "model.onnx", backend=backend, threads=1, **options) as runner:
        assert runner.input_spec.shape == ("batch", 3, 96, 96) and runner.input_spec.layout == "NCHW"
        got = runner.infer(photos)
    expected = reference(reference_model, photos)
    assert np.abs(got - expected).max() <= ATOL and rel_l2(got, expected) <= REL_L2


def test_bare_onnx_on_torch_asks_for_the_model_name(artifact):
    with pytest.raises(
        ValueError,
        match=r"no model name: give the torch backend its artifact directory instead \(from Python, .*model=NAME",
    ):
        runtime.load(artifact / "model.onnx", backend="torch")


def test_tampered_artifact_is_refused(artifact, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    for backend in CPU_BACKENDS:
        with pytest.raises(ArtifactError, match="does not match its recorded sha256"):
            runtime.load(copy, backend=backend)


def test_incomplete_artifact_and_missing_path(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        runtime.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runtime.load(tmp_path / "nowhere.onnx")
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        runtime.load(tmp_path / "model.onnx")
    (tmp_path / "model.onnx").write_bytes(b"\x0fnot an onnx file at all")
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        runtime.load(tmp_path / "model.onnx")


def test_torch_rebuilds_what_the_export_recorded(artifact):
    runner = runtime.load(artifact, backend="torch")
    assert runner.build_options() == {"checkpoint": None, "init": "random", "num_classes": 1000}


def test_torch_refuses_a_checkpoint_changed_since_export(artifact, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    checkpoint = tmp_path / "weights.safetensors"
    checkpoint.write_bytes(b"changed after the export")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["extra"]["source"].update(checkpoint=str(checkpoint), checkpoint_sha256="0" * 64, init="checkpoint")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    runner = runtime.load(copy, backend="torch")
    assert runner.build_options()["checkpoint"] == str(checkpoint)
    with pytest.raises(models.CheckpointError, match="changed since the export"):
        runner.activate()
    checkpoint.unlink()
    threads = torch.get_num_threads()
    with pytest.raises(models.CheckpointError, match=r"which is gone; give the checkpoint .*--backend onnxruntime"):
        runtime.load(copy, backend="torch", threads=threads + 1).activate()
    assert torch.get_num_threads() == threads  # a failed activation leaves the process's thread count alone


@pytest.mark.parametrize("spinning", [True, False])
def test_allow_spinning_reaches_the_session_ort_runs(artifact, spinning):
    """Timing several sessions in one process relies on it (README: ORT's spinning threads steal the CPU)."""
    with runtime.load(artifact, backend="onnxruntime", threads=1, allow_spinning=spinning) as runner:
        options = runner._session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spinning else "0")


def test_an_artifacts_manifest_path_opens_the_artifact(artifact):
    source = runtime.open_source(artifact / "manifest.json")  # the form a user may paste
    assert source.directory == artifact and source.manifest is not None


def test_a_manifest_with_two_outputs_is_one_line(artifact, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["outputs"].append({**manifest["outputs"][0], "name": "probs"})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="take one input and give one output; the manifest lists 1 inputs and 2"):
        runtime.open_source(copy)


def test_a_bare_graph_listing_its_weights_as_inputs_has_one_input(artifact, tmp_path):
    """Older exporters (opset < 9, keep_initializers_as_inputs) list every initializer in graph.input too."""
    import onnx

    model = onnx.load(str(artifact / "model.onnx"))
    model.graph.input.extend(
        onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in model.graph.initializer
    )
    path = tmp_path / "old_style.onnx"
    onnx.save(model, str(path))
    source = runtime.open_source(path)
    assert source.input_spec.name == "input" and len(model.graph.input) > 1
    with runtime.load(source, backend="onnxruntime", threads=1) as runner:
        assert runner.infer(np.zeros((1, 3, 96, 96), np.float32)).shape == (1, 1000)
