"""Image files → batch with the artifact's preprocessing; top-k decoding and labels files."""

import numpy as np
import pytest
from PIL import Image

import runtime
from models.transforms import ImageReadError, eval_transform, sample_photos
from runtime.preprocess import Preprocessing, preprocess_images, preprocessing_for
from runtime.topk import LabelsError, load_labels, softmax, top_k


def test_preprocessing_comes_from_the_manifest(artifact):
    prep = preprocessing_for(runtime.open_source(artifact))
    assert prep.size == (96, 96)
    assert prep.mean == pytest.approx((0.485, 0.456, 0.406)) and prep.std == pytest.approx((0.229, 0.224, 0.225))


def test_bare_onnx_preprocessing_falls_back_to_the_input_shape(artifact):
    assert preprocessing_for(runtime.open_source(artifact / "model.onnx")).size == (96, 96)


def source_like(*, preprocessing=None, model_name=None, shape=("batch", 3, 96, 96)):
    """What preprocessing_for reads of a ModelSource: the manifest's preprocessing, the model name, the input."""
    from types import SimpleNamespace

    from export.artifacts import TensorSpec

    manifest = SimpleNamespace(preprocessing=preprocessing) if preprocessing is not None else None
    return SimpleNamespace(
        manifest=manifest, model_name=model_name, input_spec=TensorSpec("input", shape), directory=None
    )


def test_the_manifests_own_statistics_win_over_the_models_config():
    recorded = {"input_size": [64, 80], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    prep = preprocessing_for(source_like(preprocessing=recorded, model_name="sge_resnet18"))  # config: ImageNet's
    assert prep == Preprocessing(size=(64, 80), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_a_bare_non_square_graph_keeps_height_then_width():
    assert preprocessing_for(source_like(shape=("batch", 3, 64, 96))).size == (64, 96)


def test_image_files_become_the_eval_transformed_batch(tmp_path):
    photos = sample_photos(("chelsea", "camera"))
    paths = []
    for name, image in photos.items():
        path = tmp_path / f"{name}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    prep = Preprocessing(size=(64, 80))
    batch = preprocess_images(paths, prep)
    assert batch.shape == (2, 3, 64, 80) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], eval_transform(photos["camera"], size=(64, 80)))
    mean, std = np.array(prep.mean)[:, None, None], np.array(prep.std)[:, None, None]
    pixels = batch[1] * std + mean  # undo the normalisation: the greyscale photograph is repeated over RGB
    assert np.allclose(pixels[0], pixels[2], atol=1e-6) and not np.allclose(batch[1][0], batch[1][2])


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match=r"bad\.jpg"):
        preprocess_images([bad], Preprocessing())


def test_top_k_orders_by_probability_and_uses_labels():
    logits = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]], np.float32)
    labels = ["cat", "dog", "fish", "bird"]
    preds = top_k(logits, 2, labels=labels)
    assert [p.label for p in preds[0]] == ["dog", "bird"] and [p.index for p in preds[1]] == [0, 1]
    e = np.exp([0.0, 3.0, 1.0, 2.0])
    assert preds[0][0].probability == pytest.approx(e[1] / e.sum())
    assert softmax(logits).sum(axis=1) == pytest.approx([1.0, 1.0])
    # logits far past exp's float32 range (an FP16 or untrained model): shifted first, never Inf/Inf
    assert top_k(np.array([[1000.0, 0.0]], np.float32), 1)[0][0].probability == pytest.approx(1.0)
    assert len(top_k(logits, 10)[0]) == 4 and top_k(logits, 1)[0][0].label == "class 1"
    broken = logits.copy()
    broken[1, 2] = np.nan  # what ORT gives for an input holding NaN: no ranking, one line that says what to do
    says = r"row\(s\) 1 hold NaN/Inf: the input did .*check_finite=True.* or the model overflowed"
    with pytest.raises(ValueError, match=says):
        top_k(broken, 1)


def test_labels_file_must_fit_the_classes(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\nfish\n\n")
    assert load_labels(path, num_classes=3) == ["cat", "dog", "fish"]
    with pytest.raises(LabelsError, match="3 labels but the model has 1000 classes"):
        load_labels(path, num_classes=1000)
    with pytest.raises(LabelsError, match="3 labels for 4 classes"):
        top_k(np.zeros((1, 4), np.float32), labels=["a", "b", "c"])
