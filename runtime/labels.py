"""Class names: the 1000 ImageNet-1k classes that ship with the runtime, or a user's labels file.

``runtime/imagenet_classes.txt`` holds one class a line, in index order, as ``<WordNet id>\t<lemmas>`` (generated
once from timm's ImageNet metadata, ``imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt``). A model with
1000 outputs gets these names unless a labels file is given; any other class count gets none (``class N``).
"""

import functools
from pathlib import Path

from runtime.topk import load_labels

IMAGENET_CLASSES = Path(__file__).with_name("imagenet_classes.txt")
IMAGENET_NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def _imagenet_rows() -> tuple[tuple[str, str], ...]:
    """(WordNet id, lemmas) of each ImageNet-1k class, in index order: the file read once."""
    lines = IMAGENET_CLASSES.read_text(encoding="utf-8").splitlines()
    return tuple((wnid, lemmas) for wnid, lemmas in (line.split("\t", 1) for line in lines))


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The ImageNet-1k class names in index order, each the first of its lemmas ("tabby" for "tabby, tabby cat")."""
    return tuple(lemmas.split(",")[0].strip() for _, lemmas in _imagenet_rows())


@functools.lru_cache(maxsize=1)
def imagenet_wordnet_ids() -> dict[str, int]:
    """Each ImageNet-1k class's WordNet id ("n02123045") and its index: an ImageFolder of synset folders, even a
    subset of them, is labelled by these, not by its folders' sorted order."""
    return {wnid: index for index, (wnid, _) in enumerate(_imagenet_rows())}


def labels_for(num_classes: int | None, path: str | Path | None = None) -> list[str] | None:
    """The labels for a model: ``path``'s lines when given, the ImageNet-1k names for 1000 classes, else None."""
    if path is not None:
        return load_labels(path, num_classes=num_classes)
    if num_classes == IMAGENET_NUM_CLASSES:
        return list(imagenet_class_names())
    return None
