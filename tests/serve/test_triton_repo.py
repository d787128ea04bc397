"""The Triton model repository: configs parse against Triton's own schema and match the ONNX graph."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.artifacts import ArtifactError, TensorSpec
from export.triton_config import TensorRTAccelerator, TritonConfigError, TritonModelConfig, render_config
from export.triton_repo import engine_max_batch, write_triton_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

INPUT = TensorSpec("input", ("batch", 3, 64, 64), "float32", "NCHW")
OUTPUT = TensorSpec("logits", ("batch", 1000), "float32", "NC")


def parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def onnx_tensors(path: Path) -> dict[str, tuple[str, list[int | str]]]:
    """name → (numpy dtype name, dims with symbolic names) for the graph's inputs and outputs."""
    graph = onnx.load(str(path), load_external_data=False).graph
    result = {}
    for value in (*graph.input, *graph.output):
        tensor_type = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tensor_type.shape.dim]
        result[value.name] = (dtype, dims)
    return result


def triton_dtype_name(data_type: int) -> str:
    """TYPE_FP32 → float32, via the schema's own enum."""
    names = {"FP16": "float16", "FP32": "float32", "FP64": "float64"}
    short = model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")
    return names.get(short, short.lower())


def test_repository_configs_match_the_onnx_graph(onnx_artifact, tmp_path):
    labels = [f"class_{i}" for i in range(1000)]
    repo = write_triton_repository(
        onnx_artifact,
        tmp_path / "repo",
        name="r18",
        max_batch_size=16,
        queue_delay_us=250,
        preferred_batch_sizes=(4, 8),
        instances=2,
        kind="gpu",
        tensorrt=TensorRTAccelerator(precision_mode="FP16", engine_cache_path="/cache"),
        labels=labels,
    )
    model_dir = tmp_path / "repo" / "r18"
    assert set(repo.models) == {"r18"}
    assert model_dir.stat().st_mode & 0o777 == 0o755  # a Triton server running as another user reads it
    assert (model_dir / "1" / "model.onnx").read_bytes() == (onnx_artifact / "model.onnx").read_bytes()
    assert (model_dir / "labels.txt").read_text().splitlines() == labels
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")], "staging left behind"

    config = parse((model_dir / "config.pbtxt").read_text())
    assert config.name == "r18"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [
        (2, "KIND_GPU")
    ]
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": "/cache",
    }
    assert config.output[0].label_filename == "labels.txt"

    graph = onnx_tensors(model_dir / "1" / "model.onnx")
    declared = list(config.input) + list(config.output)
    assert sorted(t.name for t in declared) == sorted(graph), "config names differ from the ONNX graph's"
    for tensor in declared:
        dtype, dims = graph[tensor.name]
        assert triton_dtype_name(tensor.data_type) == dtype, tensor.name
        assert isinstance(dims[0], str), f"{tensor.name}: the graph's batch axis is not dynamic"
        assert list(tensor.dims) == [d if isinstance(d, int) else -1 for d in dims[1:]], tensor.name


def test_export_script_writes_a_repository_that_matches_the_graph(exported):
    model_dir = exported["repo"] / "resnet18"
    config = parse((model_dir / "config.pbtxt").read_text())
    assert config.name == "resnet18" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 32 and config.dynamic_batching.max_queue_delay_microseconds == 500
    graph = onnx_tensors(model_dir / "1" / "model.onnx")
    assert {t.name: (triton_dtype_name(t.data_type), [-1, *t.dims]) for t in (*config.input, *config.output)} == {
        name: (dtype, [-1 if isinstance(d, str) else d for d in dims]) for name, (dtype, dims) in graph.items()
    }


def test_rendered_configs_parse_for_every_option():
    """Batching off, CPU instances, a TensorRT plan, extra parameters, symbolic spatial dims."""
    dynamic = TensorSpec("image", ("batch", 3, "height", "width"), "float16", "NCHW")
    cases = [
        TritonModelConfig(name="a", inputs=(INPUT,), outputs=(OUTPUT,), kind="cpu"),
        TritonModelConfig(name="b_tensorrt", inputs=(INPUT,), outputs=(OUTPUT,), platform="tensorrt_plan"),
        TritonModelConfig(
            name="c",
            inputs=(TensorSpec("input", (1, 3, 64, 64)),),
            outputs=(TensorSpec("logits", (1, 1000), layout="NC"),),
            max_batch_size=0,
        ),
        TritonModelConfig(
            name="d", inputs=(dynamic,), outputs=(OUTPUT,), extra={"mean": "0.485,0.456,0.406"}, instances=3
        ),
    ]
    parsed = [parse(render_config(c)) for c in cases]
    assert parsed[0].instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert parsed[1].platform == "tensorrt_plan"
    assert not parsed[1].optimization.execution_accelerators.gpu_execution_accelerator
    assert parsed[2].max_batch_size == 0 and not parsed[2].HasField("dynamic_batching")
    assert list(parsed[2].input[0].dims) == [1, 3, 64, 64]
    assert list(parsed[3].input[0].dims) == [3, -1, -1]
    assert parsed[3].input[0].data_type == model_config_pb2.TYPE_FP16
    assert parsed[3].parameters["mean"].string_value == "0.485,0.456,0.406"
    assert parsed[3].instance_group[0].count == 3


def test_render_is_pure_and_deterministic():
    config = TritonModelConfig(name="m", inputs=(INPUT,), outputs=(OUTPUT,))
    assert render_config(config) == render_config(config)
    json.dumps(config.to_dict())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "bad name"}, "model name"),
        ({"max_batch_size": -1}, "max_batch_size"),
        ({"instances": 0}, "instances"),
        ({"kind": "tpu"}, "kind"),
        ({"preferred_batch_sizes": (64,)}, "preferred batch sizes"),
        ({"kind": "cpu", "tensorrt": TensorRTAccelerator()}, "TensorRT accelerator"),
        ({"inputs": (TensorSpec("input", (1, 3, 64, 64)),)}, "without a dynamic batch axis"),
        ({"inputs": (TensorSpec("input", ("batch", 3), "complex64"),)}, "no type for"),
    ],
)
def test_invalid_configs_are_refused_with_a_reason(change, message):
    config = TritonModelConfig(**{"name": "m", "inputs": (INPUT,), "outputs": (OUTPUT,), **change})
    with pytest.raises(TritonConfigError, match=message):
        render_config(config)


def test_every_problem_is_reported_at_once():
    config = TritonModelConfig(name="bad name", inputs=(INPUT,), outputs=(OUTPUT,), instances=0, kind="tpu")
    with pytest.raises(TritonConfigError) as info:
        render_config(config)
    assert all(word in str(info.value) for word in ("model name", "instances", "kind"))


def test_bad_requests_leave_the_repository_untouched(onnx_artifact, tmp_path):
    repo = tmp_path / "repo"
    with pytest.raises(TritonConfigError, match="labels"):
        write_triton_repository(onnx_artifact, repo, labels=["cat", "dog"])
    with pytest.raises(TritonConfigError, match="instances"):
        write_triton_repository(onnx_artifact, repo, instances=0)
    assert not repo.exists() or not any(repo.iterdir())
    write_triton_repository(onnx_artifact, repo, name="m")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_triton_repository(onnx_artifact, repo, name="m")
    write_triton_repository(onnx_artifact, repo, name="m", overwrite=True, max_batch_size=8)
    assert parse((repo / "m" / "config.pbtxt").read_text()).max_batch_size == 8


def test_a_repository_inside_the_artifact_is_refused(onnx_artifact):
    before = sorted(p.name for p in onnx_artifact.iterdir())
    for inside in (onnx_artifact, onnx_artifact / "repo"):
        with pytest.raises(ArtifactError, match=r"lies in the artifact .*write it elsewhere"):
            write_triton_repository(onnx_artifact, inside)
    assert sorted(p.name for p in onnx_artifact.iterdir()) == before  # no stray left to block the next export
    with pytest.raises(ArtifactError, match=r"lies in the Triton repository .*keep the artifact outside"):
        write_triton_repository(onnx_artifact, onnx_artifact.parent)  # the reverse: the artifact in the repository
    assert sorted(p.name for p in onnx_artifact.iterdir()) == before


def test_the_export_refuses_a_repository_inside_its_output_before_any_work(tmp_path, capsys):
    from runtime.commands import export as export_command

    out = tmp_path / "art"
    argv = ["--model", "resnet18", "--init", "random", "--input-size", "64", "64", "--output", str(out)]
    assert export_command.main([*argv, "--triton-repo", str(out / "repo")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--triton-repo" in err and "lies in the artifact" in err
    assert not out.exists()


def test_an_overwritten_model_folder_is_swapped_in_never_removed_first(onnx_artifact, tmp_path, monkeypatch):
    """A Triton polling the repository must find the old model folder or the new one: the old one is still there
    when the new one is published (one exchange), and nothing is left beside it."""
    import export.triton_repo

    repo = tmp_path / "repo"
    write_triton_repository(onnx_artifact, repo, name="m")
    real, seen = export.triton_repo.publish_directory, []

    def publish(staging, target):  # what a polling Triton would see in the repository at the swap
        seen.append((target.exists(), sorted(p.name for p in repo.iterdir())))
        real(staging, target)

    monkeypatch.setattr(export.triton_repo, "publish_directory", publish)
    write_triton_repository(onnx_artifact, repo, name="m", overwrite=True, max_batch_size=8)
    # the staging folder is beside the repository, never in it: Triton loads hidden folders as models too
    assert seen == [(True, ["m"])]
    assert parse((repo / "m" / "config.pbtxt").read_text()).max_batch_size == 8
    assert sorted(p.name for p in repo.iterdir()) == ["m"] and sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_a_tampered_artifact_is_refused(onnx_artifact, tmp_path):
    copy = tmp_path / "artifact"
    copy.mkdir()
    for path in onnx_artifact.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="re-export"):
        write_triton_repository(copy, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_a_model_file_replaced_after_verification_is_not_shipped(onnx_artifact, tmp_path, monkeypatch):
    import os
    import shutil

    import export.triton_repo as triton_repo

    copy = tmp_path / "artifact"
    shutil.copytree(onnx_artifact, copy, copy_function=os.link)  # the hook replaces entries, never writes into files
    copyfile = shutil.copyfile

    def replaced_then_copied(source, target):  # another process replaces the file between its check and the copy
        fresh = Path(source).with_suffix(".new")
        fresh.write_bytes(Path(source).read_bytes())
        os.replace(fresh, source)
        copyfile(source, target)

    monkeypatch.setattr(triton_repo.shutil, "copyfile", replaced_then_copied)
    with pytest.raises(ArtifactError, match="changed after its hash was checked"):
        write_triton_repository(copy, tmp_path / "repo")
    assert not (tmp_path / "repo" / "model").exists() and not any((tmp_path / "repo").glob("*/1/model.onnx"))


def test_an_engines_config_is_capped_by_its_profile():
    extra = {"tensorrt": {"profile": {"input": "input", "min": [1, 3, 64, 64], "max": [16, 3, 64, 64]}}}
    assert engine_max_batch(extra, 32) == 16
    assert engine_max_batch(extra, 8) == 8
    assert engine_max_batch({}, 32) == 32
    above_one = {"tensorrt": {"profile": {"input": "input", "min": [4, 3, 64, 64], "max": [32, 3, 64, 64]}}}
    with pytest.raises(TritonConfigError, match=r"profile starts at batch 4, but Triton sends batches from 1"):
        engine_max_batch(above_one, 32)  # a request alone in the queue would fail on the server


def test_an_output_inside_the_triton_repository_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    # it was exported, reported as the artifact, then replaced by the repository's model folder of the same name
    from runtime.commands import export as export_command

    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "repo"
    argv = ["--model", "resnet18", "--init", "random", "--input-size", "32", "32", "--triton-repo", "repo"]
    assert export_command.main([*argv, "--output", "repo/resnet18/1"]) == 2
    err = capsys.readouterr().err
    assert "--output repo/resnet18/1 lies in --triton-repo repo, whose model folders are replaced whole" in err
    assert not repo.exists()
