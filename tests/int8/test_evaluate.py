"""scripts/evaluate.py and runtime/evaluate.py: datasets (ImageFolder, labels file, unlabelled), accuracy and
agreement for several backends and precisions in one run, and bad input."""

import json

import pytest

from runtime.evaluate import DatasetError, TargetResult, load_dataset, parse_target
from tests.conftest import save_photos
from tests.export.conftest import load_script


def run_evaluate(artifact, data, tmp_path, *options):
    """scripts/evaluate.py on one thread; its JSON report."""
    out = tmp_path / "eval.json"
    argv = [str(artifact), "--data", str(data), *options, "--threads", "1", "--json", str(out)]
    assert load_script("evaluate").main(argv) == 0
    return json.loads(out.read_text())


def test_image_folder_numbers_classes_in_sorted_order(tmp_path):
    save_photos(tmp_path / "b_cat", ["chelsea"])
    save_photos(tmp_path / "a_cup", ["coffee", "astronaut"])
    data = load_dataset(tmp_path)
    assert data.kind == "image-folder" and len(data) == 3
    assert dict(zip([p.name for p in data.images], data.labels, strict=True)) == {
        "astronaut.png": 0,
        "coffee.png": 0,
        "chelsea.png": 1,
    }


def test_imagenet_synset_folders_take_their_imagenet_index_even_as_a_subset(tmp_path):
    save_photos(tmp_path / "n02123045", ["chelsea"])  # tabby, class 281
    save_photos(tmp_path / "n01440764", ["coffee"])  # tench, class 0
    (tmp_path / "n01443537").mkdir()  # goldfish, no images: no shift either
    data = load_dataset(tmp_path)
    assert dict(zip([p.name for p in data.images], data.labels, strict=True)) == {"coffee.png": 0, "chelsea.png": 281}


def test_an_empty_class_folder_keeps_its_place_in_the_numbering(tmp_path):
    save_photos(tmp_path / "a_cup", ["coffee"])
    (tmp_path / "b_empty").mkdir()
    save_photos(tmp_path / "c_cat", ["chelsea"])
    data = load_dataset(tmp_path)
    assert dict(zip([p.name for p in data.images], data.labels, strict=True)) == {"coffee.png": 0, "chelsea.png": 2}


def test_class_folders_with_images_beside_them_are_refused_not_read_as_unlabelled(tmp_path):
    save_photos(tmp_path / "n02123045", ["chelsea"])
    save_photos(tmp_path, ["coffee"])  # a stray preview: it turned the whole set "unlabelled", without a word
    with pytest.raises(DatasetError, match=r"holds class folders and 1 image beside them \(coffee\.png\): move"):
        load_dataset(tmp_path)
    (tmp_path / "labels.txt").write_text("n02123045/chelsea.png 281\n")
    assert load_dataset(tmp_path, labels_file=tmp_path / "labels.txt").labels == (281,)  # the way out it names
    (tmp_path / "folder.txt").write_text("n02123045 281\n")
    with pytest.raises(DatasetError, match=r"folder\.txt:1: .*n02123045 is a folder, not an image"):
        load_dataset(tmp_path, labels_file=tmp_path / "folder.txt")


def test_labels_file_and_unlabelled(tmp_path):
    save_photos(tmp_path, ["coffee", "chelsea"])
    (tmp_path / "labels.txt").write_text("coffee.png 967\nchelsea.png, 281\n")
    labelled = load_dataset(tmp_path, labels_file=tmp_path / "labels.txt")
    assert labelled.kind == "labels-file" and labelled.labels == (967, 281)
    assert load_dataset(tmp_path).labels is None
    (tmp_path / "bad.txt").write_text("coffee.png cat\n")
    with pytest.raises(DatasetError, match=r"bad\.txt:1"):
        load_dataset(tmp_path, labels_file=tmp_path / "bad.txt")
    with pytest.raises(DatasetError, match="no images"):
        (tmp_path / "empty").mkdir()
        load_dataset(tmp_path / "empty")
    (tmp_path / "none.txt").write_text("\n")
    with pytest.raises(DatasetError, match=r"none\.txt lists no images; give lines of"):
        load_dataset(tmp_path, labels_file=tmp_path / "none.txt")


def test_target_result_counts_accuracy_and_agreement():
    import numpy as np

    reference = np.array([[0.0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]])
    candidate = np.array([[0.0, 1, 2, 3, 5, 4], [5, 4, 3, 2, 1, 0]])  # sample 0's top-1 swaps with its top-2
    result = TargetResult("x")
    result.add(candidate, reference, labels=np.array([5, 0]))
    row = result.to_dict(labelled=True)
    assert row["accuracy"] == {"top1": 0.5, "top5": 1.0}
    assert row["agreement"]["top1_agreement"] == 0.5 and row["agreement"]["top5_overlap"] == 1.0
    assert parse_target("openvino:int8") == ("openvino", "int8") and parse_target("onnxruntime") == (
        "onnxruntime",
        "fp32",
    )


def test_top5_counts_a_label_at_rank_5_and_overlap_divides_by_the_classes_there_are():
    import numpy as np

    logits = np.array([[9.0, 8, 7, 6, 5, 4, 3]])  # ranks 1..7 are classes 0..6
    for label, top5 in ((4, 1), (5, 0)):
        result = TargetResult("x")
        result.add(logits, logits, labels=np.array([label]))
        assert result.to_dict(labelled=True)["accuracy"] == {"top1": 0.0, "top5": float(top5)}
    three = TargetResult("x")  # a 3-class model: its "top-5" is every class, and identical rankings overlap fully
    three.add(np.array([[1.0, 2, 3]]), np.array([[1.0, 2, 3]]), labels=None)
    assert three.to_dict(labelled=False)["agreement"]["top5_overlap"] == 1.0


def test_accuracy_pairs_each_image_with_its_own_label_across_batches(int8_artifact, tmp_path):
    """4 photographs in batches of 3: the second batch's labels must still belong to its images. The expected count
    comes from each photograph run alone."""

    import runtime
    from runtime.evaluate import Dataset, evaluate
    from runtime.preprocess import preprocess_images, preprocessing_for

    directory, _ = int8_artifact
    names = ["coffee", "chelsea", "astronaut", "rocket"]
    save_photos(tmp_path, names)
    images = tuple(sorted(tmp_path.glob("*.png"), key=lambda p: names.index(p.stem)))
    source = runtime.open_source(directory)
    with runtime.load(source, "onnxruntime", threads=1) as runner:
        alone = [int(runner.infer(preprocess_images([image], preprocessing_for(source))).argmax()) for image in images]
    labels = (alone[0], (alone[1] + 1) % 1000, alone[2], alone[3])  # the second one wrong, on purpose
    dataset = Dataset(tmp_path, images, labels, "labels-file")
    report = evaluate(source, dataset, targets=["onnxruntime"], reference="onnxruntime", batch=3, threads=1)
    assert report["results"][0]["accuracy"]["top1"] == 0.75


def test_evaluate_script_runs_several_targets_against_eager(int8_artifact, tmp_path):
    directory, _ = int8_artifact
    data = tmp_path / "data"
    save_photos(data / "0", ["coffee", "chelsea"])
    save_photos(data / "1", ["astronaut", "rocket"])
    report = run_evaluate(
        directory, data, tmp_path, "--targets", "onnxruntime,onnxruntime:int8,openvino:int8", "--batch", "3"
    )
    assert report["reference"] == "torch" and report["data"] == {"root": str(data), "kind": "image-folder", "images": 4}
    assert report["artifact"] == str(directory)
    rows = {row["target"]: row for row in report["results"]}
    assert rows["onnxruntime"]["agreement"]["cosine_min"] > 0.99999  # FP32 ONNX vs FP32 eager
    assert rows["onnxruntime"]["agreement"]["top1_agreement"] == 1.0
    for target in ("onnxruntime:int8", "openvino:int8"):
        assert 0.99 <= rows[target]["agreement"]["cosine_min"] < 0.99999
        assert 0.0 <= rows[target]["accuracy"]["top1"] <= rows[target]["accuracy"]["top5"] <= 1.0
        assert rows[target]["images"] == 4


def test_evaluate_script_bad_input_exits_2(int8_artifact, tmp_path, capsys):
    evaluate = load_script("evaluate")
    assert evaluate.main([str(int8_artifact[0]), "--data", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    save_photos(tmp_path / "photos", ["coffee"])  # a --json that is a folder: refused before any image runs
    assert evaluate.main([str(int8_artifact[0]), "--data", str(tmp_path / "photos"), "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path} is a directory" in capsys.readouterr().err


def test_unlabelled_folder_against_the_fp32_onnx_reference(int8_artifact, tmp_path):
    """Without labels: agreement only; the reference may be FP32 ONNX Runtime (no torch needed)."""
    data = tmp_path / "photos"
    save_photos(data, ["coffee", "chelsea", "rocket"])
    report = run_evaluate(
        int8_artifact[0], data, tmp_path, "--targets", "onnxruntime:int8", "--reference", "onnxruntime"
    )
    (row,) = report["results"]
    assert report["data"]["kind"] == "unlabelled" and row["accuracy"] is None
    assert row["agreement"]["cosine_min"] >= 0.99 and 0.0 <= row["agreement"]["top5_overlap"] <= 1.0


def test_a_class_index_outside_the_model_is_refused_in_one_line(int8_artifact, tmp_path, capsys):
    save_photos(tmp_path, ["coffee", "chelsea"])
    (tmp_path / "labels.txt").write_text("coffee.png 1000\nchelsea.png -3\n")  # 1000: one past the last class
    argv = [str(int8_artifact[0]), "--data", str(tmp_path), "--labels", str(tmp_path / "labels.txt")]
    assert load_script("evaluate").main([*argv, "--reference", "onnxruntime", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "class indices [-3, 1000]" in err and "outside the model's 0..999" in err and "\n" not in err


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_a_limit_below_1_is_refused_in_one_line(int8_artifact, tmp_path, capsys, limit):
    """--limit -1 used to drop the last image silently; 0 failed deep inside."""
    save_photos(tmp_path, ["coffee", "chelsea"])
    argv = [str(int8_artifact[0]), "--data", str(tmp_path), "--reference", "onnxruntime", "--threads", "1"]
    assert load_script("evaluate").main([*argv, "--limit", limit, "--json", str(tmp_path / "eval.json")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --limit must be at least 1")
    assert "evaluating" not in err  # refused before the progress bar starts
    assert not (tmp_path / "eval.json").exists()


@pytest.mark.parametrize("batch", ["0", "-2"])
def test_a_batch_size_below_1_is_refused_while_parsing(int8_artifact, tmp_path, capsys, batch):
    """A batch size below 1 failed deep inside; the shared --batch-size type refuses it before anything runs."""
    argv = [str(int8_artifact[0]), "--data", str(tmp_path), "--batch-size", batch, "--json", str(tmp_path / "e.json")]
    with pytest.raises(SystemExit) as exit_info:
        load_script("evaluate").main(argv)
    assert exit_info.value.code == 2
    assert f"argument --batch-size: must be at least 1; got {int(batch)}" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()


def test_load_dataset_refuses_a_limit_below_1(tmp_path):
    save_photos(tmp_path, ["coffee", "chelsea"])
    assert len(load_dataset(tmp_path, limit=1)) == 1
    for limit in (0, -1):
        with pytest.raises(DatasetError, match="--limit must be at least 1"):
            load_dataset(tmp_path, limit=limit)


def test_hidden_folders_are_no_class_and_mixed_names_are_refused(tmp_path):
    save_photos(tmp_path / "n02123045", ["chelsea"])  # tabby, class 281
    (tmp_path / ".ipynb_checkpoints").mkdir()  # once renumbered every class by sorted order: 281 became 0
    assert load_dataset(tmp_path).labels == (281,)
    save_photos(tmp_path / "cats", ["coffee"])
    with pytest.raises(DatasetError, match=r"1 class folders are named by ImageNet WordNet ids but 1 are not \(cats\)"):
        load_dataset(tmp_path)
    save_photos(tmp_path / "numbered" / "7", ["coffee"])
    save_photos(tmp_path / "numbered" / "other", ["chelsea"])
    with pytest.raises(DatasetError, match=r"named by integers but 1 are not \(other\); rename or move those"):
        load_dataset(tmp_path / "numbered")


def test_labels_files_with_a_bom_a_wrong_encoding_or_a_folder(tmp_path):
    save_photos(tmp_path, ["coffee"])
    (tmp_path / "bom.txt").write_text("coffee.png 967\n", encoding="utf-8-sig")
    assert load_dataset(tmp_path, labels_file=tmp_path / "bom.txt").labels == (967,)
    (tmp_path / "latin.txt").write_bytes("caf\xe9.png 967\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin\.txt is not UTF-8 text \(invalid .* at byte 3\); save it as UTF-8"):
        load_dataset(tmp_path, labels_file=tmp_path / "latin.txt")
    with pytest.raises(DatasetError, match=r"labels file .* is a directory; give a file"):
        load_dataset(tmp_path, labels_file=tmp_path)


def test_default_targets_add_int8_only_where_the_artifact_has_it(int8_artifact):
    from types import SimpleNamespace

    import runtime
    from runtime.evaluate import default_targets

    assert default_targets(runtime.open_source(int8_artifact[0])) == ["onnxruntime", "onnxruntime:int8"]
    fp32_only = SimpleNamespace(files={"model.onnx": SimpleNamespace(role="model")})
    assert default_targets(SimpleNamespace(manifest=fp32_only)) == ["onnxruntime"]
    assert default_targets(SimpleNamespace(manifest=None)) == ["onnxruntime"]  # a bare ONNX file


def test_a_target_that_cannot_run_is_refused_before_any_image(int8_artifact, tmp_path, capsys):
    save_photos(tmp_path / "photos", ["coffee"])
    argv = [str(int8_artifact[0]), "--data", str(tmp_path / "photos"), "--backends", "onnxruntime,nosuch"]
    assert load_script("evaluate").main(argv) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "evaluating" not in err  # no progress bar was started


def test_a_reference_that_cannot_activate_is_refused_before_the_bar(int8_artifact, tmp_path, capsys, monkeypatch):
    """Without torch the default reference failed only after "evaluating 0/N" had been printed."""
    import sys

    save_photos(tmp_path / "photos", ["coffee"])
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, as in a deploy-only install
    assert load_script("evaluate").main([str(int8_artifact[0]), "--data", str(tmp_path / "photos")]) == 2
    err = capsys.readouterr().err
    assert "evaluating" not in err and "--reference onnxruntime" in err, err
