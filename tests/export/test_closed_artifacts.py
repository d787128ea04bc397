"""Artifacts are closed: manifest paths stay inside the directory, what is verified is what runs, and a malformed
manifest or graph is one line, never a traceback."""

import hashlib
import json
import logging
import os
import shutil

import pytest

import runtime
from export.artifacts import ArtifactError, load_manifest
from tests.export.conftest import load_script


@pytest.fixture
def copy(tiny_artifact, tmp_path):
    target = tmp_path / "artifact"
    shutil.copytree(tiny_artifact, target)
    return target


def edit_manifest(directory, change):
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def rehash(directory, name):
    """What a tamperer with write access does: rewrite a file and its manifest entry."""
    data = (directory / name).read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    edit_manifest(directory, lambda m: m["files"][name].update(entry))


def move_entry(data, new_name):
    data["files"][new_name] = data["files"].pop("model.onnx")
    data["deploy"] = new_name


@pytest.mark.parametrize("escape", ["../outside/model.onnx", "ABSOLUTE"], ids=["dotdot", "absolute"])
def test_manifest_paths_outside_the_directory_are_refused(copy, tmp_path, escape):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(copy / "model.onnx", outside / "model.onnx")  # same bytes: the hash alone would accept it
    name = str(outside / "model.onnx") if escape == "ABSOLUTE" else escape
    edit_manifest(copy, lambda m: move_entry(m, name))
    for load in (load_manifest, runtime.open_source):
        with pytest.raises(ArtifactError, match="not a plain relative path inside the artifact directory"):
            load(copy)


def test_a_symlink_out_of_the_directory_is_refused(copy, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(copy / "model.onnx", outside)
    (copy / "model.onnx").symlink_to(outside)  # same bytes, same hash
    with pytest.raises(ArtifactError, match=r"model\.onnx is \(or passes through\) a symlink; .*cp -rL"):
        runtime.load(copy, backend="onnxruntime")


def test_a_symlinked_manifest_is_named_as_such_with_the_fix(copy, tmp_path):
    linked = tmp_path / "linked"  # as DVC or git-annex leave a checkout: every file a link
    linked.mkdir()
    for path in copy.iterdir():
        (linked / path.name).symlink_to(path)
    with pytest.raises(ArtifactError, match=r"manifest\.json is a symlink; .*\(cp -rL ART NEW\)"):
        runtime.load(linked, backend="onnxruntime")
    shutil.copytree(linked, tmp_path / "followed", symlinks=False)  # what the message says to do
    with runtime.load(tmp_path / "followed", backend="onnxruntime", threads=1) as runner:
        assert runner.is_active


@pytest.mark.parametrize("how", ["replaced", "rewritten"])
def test_a_file_changed_between_load_and_activation_is_refused(copy, tiny_artifact, tmp_path, how):
    runner = runtime.load(copy, backend="onnxruntime", threads=1)  # hashes checked here
    other = tmp_path / "other.onnx"
    other.write_bytes((tiny_artifact / "model.onnx").read_bytes())
    if how == "replaced":  # a new file renamed over the verified one (even with the same bytes)
        os.replace(other, copy / "model.onnx")
    else:  # the verified file written in place
        with open(copy / "model.onnx", "r+b") as f:
            f.write(f.read(16))
    with pytest.raises(ArtifactError, match="changed after its hash was checked"):
        runner.activate()
    assert not runner.is_active


def test_unchanged_artifact_still_activates_and_runs(copy):
    import numpy as np

    with runtime.load(copy, backend="onnxruntime", threads=1) as runner:
        assert runner.infer(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 1000)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m.update(files=None), "files must be a JSON dict"),
        (lambda m: m.update(inputs="x"), "inputs must be a JSON list"),
        (lambda m: m["files"]["model.onnx"].update(size="big"), "size must be a non-negative integer"),
        (lambda m: m.pop("deploy"), "lacks the field 'deploy'"),
        (lambda m: m["extra"].update(source="x"), "extra.source must be a JSON dict"),
        (lambda m: m["extra"].update(spec=None), "extra.spec must be a JSON dict"),
        (lambda m: m["preprocessing"].update(mean=[0.5]), "preprocessing.mean must be a JSON list of 3 numbers"),
        (lambda m: m["extra"]["source"].update(num_classes="x"), "num_classes must be a positive integer"),
        (lambda m: m["extra"]["source"].update(block_overrides=[1]), "block_overrides must be a JSON dict"),
        (lambda m: m["inputs"][0].update(dtype="foo"), "a tensor's dtype must be one of float32, .*; got 'foo'"),
        (lambda m: m["preprocessing"].update(std=[0, 0, 0]), r"preprocessing.std must be 3 positive numbers"),
        (lambda m: m["preprocessing"].update(mean=[0, float("nan"), 0]), r"preprocessing.mean must be 3 finite"),
        (lambda m: m["preprocessing"].update(std=[float("inf"), 1, 1]), r"preprocessing.std must be 3 positive"),
        (lambda m: m["inputs"][0].update(shape=[-5, 3, 64, 64]), r"shape holds names or sizes ≥ -1"),
        (lambda m: m["inputs"][0].update(min_side=0), r"min_side must be a positive integer"),
        (lambda m: m["extra"]["source"].update(num_classes=0), "num_classes must be a positive integer"),
        (lambda m: m["files"]["model.onnx"].update(sha256="ab"), r"sha256 must be 64 hex digits"),
        (lambda m: m["preprocessing"].update(color="BGR"), r"preprocessing.color is 'BGR', but the runtime's .* 'RGB'"),
        (lambda m: m["preprocessing"].update(interpolation="nearest"), r"interpolation is 'nearest', but .*bilinear"),
        (lambda m: m["preprocessing"].update(scale=1.0), r"preprocessing.scale is 1.0, but"),
        (lambda m: m["preprocessing"].update(resize_shorter=500), r"resize_shorter is 500, but .* does \d+"),
    ],
    ids=[
        "files-null", "inputs-string", "size-string", "no-deploy", "source", "spec", "mean", "classes", "overrides",
        "dtype", "std-zero", "mean-nan", "std-inf", "shape-below-minus-1", "min-side-0", "classes-0", "sha256-short",
        "color", "interpolation", "scale", "resize",
    ],
)  # fmt: skip
def test_malformed_manifest_is_one_line(copy, tmp_path, capsys, change, expected):
    edit_manifest(copy, change)
    with pytest.raises(ArtifactError, match=expected):
        load_manifest(copy)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (80, 80)).save(image)
    assert load_script("infer").main([str(copy), str(image)]) == 2
    out = capsys.readouterr().err.strip()
    assert out.count("\n") == 0 and out.startswith("error:") and "manifest" in out and "Traceback" not in out


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda m: m["inputs"][0].update(name="images"), "the manifest's input 'images'"),
        (lambda m: m["outputs"][0].update(name="probs"), "the manifest's output 'probs'"),
        (lambda m: m["outputs"][0].update(shape=["batch", 10]), r"the manifest's output 'logits' \('batch', 10\)"),
        (lambda m: m["inputs"][0].update(dtype="float16"), r"the manifest's input 'input' .* float16"),
    ],
    ids=["input-name", "output-name", "classes", "dtype"],
)
def test_a_manifest_that_disagrees_with_its_graph_is_refused_at_activation(copy, backend, change, says):
    edit_manifest(copy, change)
    runner = runtime.load(copy, backend=backend, threads=1)
    with pytest.raises(ArtifactError, match=f"{says}.* is not the graph's .*; the manifest was edited or belongs"):
        runner.activate()
    assert not runner.is_active


def test_a_manifest_edited_alone_is_caught_against_the_graphs_own_metadata(copy, capsys):
    """mean 0 and std 1 in manifest.json alone passed every hash and changed the top-1 of every photograph."""
    edit_manifest(copy, lambda m: m["preprocessing"].update(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]))
    runner = runtime.load(copy, backend="onnxruntime", threads=1)
    with pytest.raises(ArtifactError, match=r"disagrees with the graph it deploys \(preprocessing.mean \[0.0, 0.0"):
        runner.activate()
    assert load_script("validate").main([str(copy)]) == 2
    err = capsys.readouterr().err
    assert "disagrees with model.onnx (preprocessing.mean" in err and "restore it or re-export" in err


@pytest.mark.parametrize(
    ("field", "value"),
    [("mean", [0.5, 0.456, 0.406]), ("std", [0.229, 0.224, 0.5]), ("mean", [0.49, 0.456, 0.406])],
    ids=["mean", "std", "mean-by-0.005"],
)
def test_one_preprocessing_field_edited_alone_is_caught(copy, field, value):
    edit_manifest(copy, lambda m: m["preprocessing"].update({field: value}))
    with pytest.raises(ArtifactError, match=rf"disagrees with the graph it deploys \(preprocessing\.{field} "):
        runtime.load(copy, backend="onnxruntime", threads=1).activate()


def test_an_input_size_edited_alone_is_caught_by_the_runner_and_validate(copy, capsys):
    from models.transforms import resize_for_crop

    size = json.loads((copy / "manifest.json").read_text())["preprocessing"]["input_size"]
    bigger = [side + 32 for side in size]  # and the resize that goes with it, so the manifest is self-consistent
    resize = resize_for_crop(bigger[0])
    edit_manifest(copy, lambda m: m["preprocessing"].update(input_size=bigger, resize_shorter=resize))
    with pytest.raises(ArtifactError, match=r"disagrees with the graph it deploys \(preprocessing\.input_size \["):
        runtime.load(copy, backend="onnxruntime", threads=1).activate()
    assert load_script("validate").main([str(copy)]) == 2  # it passed, and infer then refused every image
    assert f"(preprocessing.input_size {bigger}, the graph {size})" in capsys.readouterr().err


def test_a_manifest_naming_another_model_is_caught_against_the_graph(copy, capsys):
    """validate would rebuild the named model, and serve publish the artifact under that name."""
    edit_manifest(copy, lambda m: m.update(model="sge_resnet18"))
    with pytest.raises(ArtifactError, match=r"disagrees with the graph it deploys \(model"):
        runtime.load(copy, backend="onnxruntime", threads=1).activate()
    assert load_script("validate").main([str(copy)]) == 2
    assert "disagrees with model.onnx (model" in capsys.readouterr().err


def test_a_deploy_file_the_manifest_does_not_record_is_refused(copy, capsys):
    """Dropping the deploy graph's entry would leave it unhashed: whatever model.onnx holds would run."""
    edit_manifest(copy, lambda m: m["files"].pop("model.onnx"))
    with pytest.raises(ArtifactError, match=r"the deploy file model\.onnx is not recorded.*re-export"):
        runtime.load(copy, backend="onnxruntime", threads=1)
    assert load_script("validate").main([str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the deploy file model.onnx is not recorded" in err


@pytest.mark.parametrize("deploy", ["parity.json"])
def test_a_deploy_field_naming_another_recorded_file_is_refused(copy, capsys, deploy):
    """validate parsed the named report or weights file as ONNX: an internal error (exit 3)."""
    edit_manifest(copy, lambda m: m.update(deploy=deploy))
    with pytest.raises(ArtifactError, match=rf"the deploy file {deploy} is recorded as '[\w-]+', not as the model"):
        runtime.load(copy, backend="onnxruntime", threads=1)
    assert load_script("validate").main([str(copy)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda m: m["extra"]["source"].update(block_overrides={"evil": 1}), "extra.source does not rebuild"),
        (lambda m: m["extra"]["spec"].update(input_size=[96, 96]), "cannot run the input extra.spec records"),
    ],
    ids=["overrides", "spec-size"],
)
def test_validate_refuses_a_manifest_that_does_not_fit_its_graph_in_one_line(copy, capsys, change, says):
    edit_manifest(copy, change)
    assert load_script("validate").main([str(copy)]) == 2  # was exit 3, "internal error"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "re-export" in err, err


def test_garbage_graph_with_a_rehashed_manifest_is_one_line(copy):
    (copy / "model.onnx").write_bytes(b"\x08garbage, not a protobuf" * 10)
    rehash(copy, "model.onnx")
    load_manifest(copy)  # the hashes match: the manifest cannot tell (it is not signed; README: Artifacts)
    runner = runtime.load(copy, backend="onnxruntime")
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        runner.activate()


def test_extra_and_missing_entries_are_reported(copy, caplog):
    (copy / "stray.bin").write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        load_manifest(copy)
    assert "stray.bin" in caplog.text and "does not record" in caplog.text
    (copy / "parity.json").unlink()
    with pytest.raises(ArtifactError, match=r"parity\.json is missing"):
        load_manifest(copy)


def test_readme_states_what_the_manifest_guarantees_and_what_not():
    """A re-exported file with a re-hashed manifest loads (shown above): the README must say so."""
    from tests.export.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### What the manifest guarantees", 1)[1].split("\n#", 1)[0]
    assert "tampering of single files" in section and "re-hash the manifest" in section and "not signed" in section
    assert "symlink" in section and "changed after its hash was checked" in section


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m["extra"]["spec"].update(atol="x"), "extra.spec is malformed"),
        (lambda m: m["preprocessing"].pop("mean"), "preprocessing lacks mean or std"),
    ],
    ids=["spec-atol", "no-mean"],
)
def test_validate_names_a_malformed_manifest_field_in_one_line(copy, capsys, change, expected):
    edit_manifest(copy, change)
    assert load_script("validate").main([str(copy)]) == 2
    captured = capsys.readouterr()
    text = (captured.out + captured.err).strip()
    assert expected in text and "internal error" not in text and "Traceback" not in text


def test_validate_refuses_a_graph_replaced_while_it_was_checked(copy, monkeypatch):
    import export.validate as validate

    photo_inputs = validate.photo_inputs

    def swap_then_photos(*args, **kwargs):  # another process replaces model.onnx after the hashes were checked
        replaced = copy / "model.onnx.new"
        replaced.write_bytes((copy / "model.onnx").read_bytes())
        os.replace(replaced, copy / "model.onnx")
        return photo_inputs(*args, **kwargs)

    monkeypatch.setattr(validate, "photo_inputs", swap_then_photos)
    with pytest.raises(ArtifactError, match="changed after its hash was checked"):
        validate.validate_artifact(copy)


def test_validate_refuses_a_graph_the_manifest_does_not_record(copy):
    import export.validate as validate

    (copy / "stray.onnx").write_bytes((copy / "model.onnx").read_bytes())  # on disk, but never recorded
    with pytest.raises(ArtifactError, match=r"records no ONNX file stray\.onnx; it has .*model\.onnx"):
        validate.validate_artifact(copy, graphs=["stray.onnx"])


@pytest.mark.parametrize("flag", ["--output", "--triton-repo"])
def test_an_export_into_a_folder_inside_an_artifact_is_refused_before_the_work(copy, tmp_path, capsys, flag):
    from runtime.commands import export

    before = sorted(p.name for p in copy.iterdir())
    output = copy / "sub" if flag == "--output" else tmp_path / "out"
    args = ["--model", "resnet18", "--output", str(output)]
    if flag == "--triton-repo":
        args += ["--triton-repo", str(copy / "triton")]
    assert export.main(args) == 2
    err = capsys.readouterr().err
    assert f"lies in the artifact {copy}, whose files are hashed" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in copy.iterdir()) == before  # no sub/, no lock file left in the artifact


def test_an_output_file_in_another_artifact_is_refused_without_probing_there(copy, tmp_path, monkeypatch):
    import tempfile

    from runtime.cli import OutputPathError, check_output_paths

    other = tmp_path / "other"
    shutil.copytree(copy, other)
    probed = []
    real = tempfile.NamedTemporaryFile
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", lambda **kw: probed.append(kw["dir"]) or real(**kw))
    with pytest.raises(OutputPathError, match=rf"--json .*x\.json lies in the artifact {other}, whose files are"):
        check_output_paths(json=other / "sub" / "x.json", inputs=[copy])  # not an input, still an artifact
    assert probed == []  # refused before a probe file could be made (and left, if killed) inside it
    check_output_paths(json=tmp_path / "x.json", inputs=[copy])
    assert probed == [tmp_path]
