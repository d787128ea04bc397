"""The ImageNet-1k class names that ship with the runtime, and the labels a model gets."""

import pytest

from runtime.labels import IMAGENET_CLASSES, imagenet_class_names, labels_for
from runtime.topk import LabelsError


def test_the_shipped_names_are_imagenet_1k_in_index_order():
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) > 990  # a few lemmas repeat (crane, maillot)
    assert names[0] == "tench" and names[281] == "tabby" and names[999] == "toilet tissue"
    synsets = [line.split("\t")[0] for line in IMAGENET_CLASSES.read_text().splitlines()]
    assert synsets == sorted(synsets) and synsets[0] == "n01440764"  # WordNet ids in ascending order = class index


def test_a_model_gets_imagenet_names_for_1000_classes_only():
    assert labels_for(1000) == list(imagenet_class_names())
    assert labels_for(10) is None and labels_for(None) is None


def test_a_labels_file_overrides_and_must_fit(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n")
    assert labels_for(2, path) == ["cat", "dog"]
    with pytest.raises(LabelsError, match="has 2 labels but the model has 1000 classes"):
        labels_for(1000, path)


def test_a_byte_order_mark_is_no_part_of_the_first_label(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n", encoding="utf-8-sig")  # as Windows Notepad saves UTF-8
    assert labels_for(2, path) == ["cat", "dog"]
