"""Accuracy and agreement of an artifact's backends and precisions on a folder of images (``scripts/evaluate.py``).

Data: an ImageFolder-style directory (one sub-folder per class: sub-folders named by ImageNet WordNet ids, any subset
of the 1000, take their ImageNet-1k index; sub-folders named by integers use those integers; others are numbered in
sorted order, as torchvision's ImageFolder does, empty ones included), or any directory with a labels file
(``relative/path.jpg <class index>`` per line), or a directory of images without labels and without class folders
(every image, recursively). Class folders with images beside them are refused: neither layout. A class
index outside the model's classes is refused. With labels each target gets top-1 and top-5 accuracy. Every target
is also compared with a reference on the same batches: FP32 eager PyTorch by default (``reference="torch"``; the
only import of torch), or any other target such as ``onnxruntime:fp32``: top-1 agreement, top-5 overlap (shared
classes / 5, or / the class count below 5), cosine and relative L2 of the logits; a NaN or Inf in any output is an
error.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DatasetError(ValueError):
    """The evaluation directory or labels file is missing, empty or malformed."""


@dataclass(frozen=True)
class Dataset:
    root: Path
    images: tuple[Path, ...]
    labels: tuple[int, ...] | None  # None: no labels, agreement only
    kind: str  # "image-folder", "labels-file" or "unlabelled"

    def __len__(self) -> int:
        return len(self.images)


def _images_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_dataset(root: str | Path, *, labels_file: str | Path | None = None, limit: int | None = None) -> Dataset:
    """Read ``root`` as a labels-file set, an ImageFolder, or unlabelled images (see the module docstring)."""
    root = Path(root)
    if limit is not None and limit < 1:  # a negative slice would silently drop images from the end
        raise DatasetError(f"--limit must be at least 1 (how many images to evaluate); got {limit}, or leave it out")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory; give a folder of images (one sub-folder per class)")
    if labels_file is not None:
        images, labels = _read_labels(root, Path(labels_file))
        kind = "labels-file"
        if not images:
            raise DatasetError(f"{labels_file} lists no images; give lines of '<relative image path> <class index>'")
    else:
        from runtime.labels import imagenet_wordnet_ids

        # empty ones keep their place, as in ImageFolder; hidden ones (.ipynb_checkpoints, .git) are no class
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        classes = any(_images_under(p) for p in folders)
        if loose and classes:  # neither layout: one stray file must not drop the labels
            raise DatasetError(
                f"{root} holds class folders and {len(loose)} image{'s' if len(loose) > 1 else ''} beside them "
                f"({', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}): move those into a class folder or "
                f"out of {root}, or give --labels FILE"
            )
        if classes:
            numbered = all(p.name.isdigit() for p in folders)
            synsets = imagenet_wordnet_ids()
            by_synset = all(p.name in synsets for p in folders)
            _check_one_naming(root, folders, synsets)
            images, labels = [], []
            for index, folder in enumerate(folders):
                label = int(folder.name) if numbered else synsets[folder.name] if by_synset else index
                for image in _images_under(folder):
                    images.append(image)
                    labels.append(label)
            kind = "image-folder"
        else:
            images, labels, kind = _images_under(root), None, "unlabelled"
    if not images:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    if limit is not None:
        images = images[:limit]
        labels = labels[:limit] if labels is not None else None
    return Dataset(root=root, images=tuple(images), labels=tuple(labels) if labels is not None else None, kind=kind)


def _check_one_naming(root: Path, folders: list[Path], synsets: dict[str, int]) -> None:
    """DatasetError when class folders mix WordNet ids or integers with other names: one stray folder would renumber
    every class by sorted order, and every score would be silently wrong."""
    for kind, named in (
        ("ImageNet WordNet ids", [p for p in folders if p.name in synsets]),
        ("integers", [p for p in folders if p.name.isdigit()]),
    ):
        others = [p.name for p in folders if p not in named]
        if named and others:
            raise DatasetError(
                f"{root}: {len(named)} class folders are named by {kind} but {len(others)} are not "
                f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); rename or move those"
            )


def _read_labels(root: Path, path: Path) -> tuple[list[Path], list[int]]:
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DatasetError(f"labels file {path} {what}; give a file of lines '<relative image path> <class index>'")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"labels file {path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from None
    images, labels = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DatasetError(f"{path}:{number}: expected '<relative image path> <class index>'; got {line!r}")
        image = root / parts[0]
        if not image.is_file():
            what = "is a folder, not an image" if image.is_dir() else "does not exist"
            raise DatasetError(f"{path}:{number}: {image} {what}")
        images.append(image)
        labels.append(int(parts[1]))
    return images, labels


@dataclass
class TargetResult:
    target: str  # "backend:precision"
    images: int = 0
    top1_correct: int = 0
    top5_correct: int = 0
    top1_agree: int = 0
    top5_overlap: float = 0.0
    cosines: list[float] = field(default_factory=list)
    rel_l2s: list[float] = field(default_factory=list)
    described: dict[str, Any] = field(default_factory=dict)

    def add(self, logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> None:
        top5, ref_top5 = _top5(logits), _top5(reference)
        self.images += len(logits)
        if labels is not None:
            self.top1_correct += int((top5[:, 0] == labels).sum())
            self.top5_correct += int((top5 == labels[:, None]).any(axis=1).sum())
        self.top1_agree += int((top5[:, 0] == ref_top5[:, 0]).sum())
        k = top5.shape[1]  # 5, or every class of a smaller model
        self.top5_overlap += sum(len(set(a) & set(b)) / k for a, b in zip(top5, ref_top5, strict=True))
        a, b = logits.astype(np.float64), reference.astype(np.float64)
        self.cosines += list((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
        self.rel_l2s += list(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1))

    def to_dict(self, *, labelled: bool) -> dict[str, Any]:
        n = max(self.images, 1)
        accuracy = {"top1": self.top1_correct / n, "top5": self.top5_correct / n} if labelled else None
        return {
            "target": self.target,
            "images": self.images,
            "accuracy": accuracy,
            "agreement": {
                "top1_agreement": self.top1_agree / n,
                "top5_overlap": self.top5_overlap / n,
                "cosine_mean": float(np.mean(self.cosines)),
                "cosine_min": float(np.min(self.cosines)),
                "rel_l2_mean": float(np.mean(self.rel_l2s)),
                "rel_l2_max": float(np.max(self.rel_l2s)),
            },
            "runner": self.described,
        }


def _top5(logits: np.ndarray) -> np.ndarray:
    k = min(5, logits.shape[1])
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def parse_target(text: str) -> tuple[str, str]:
    """ "onnxruntime:int8" → ("onnxruntime", "int8"); a bare backend is FP32."""
    backend, _, precision = text.partition(":")
    return backend, precision or "fp32"


def check_labels(source: Any, dataset: Dataset) -> None:
    """DatasetError unless every label is one of the model's classes (a wrong one would count as a silent miss)."""
    classes = source.output_spec.shape[-1]
    if dataset.labels is not None and isinstance(classes, int):
        wrong = sorted({label for label in dataset.labels if not 0 <= label < classes})
        if wrong:
            raise DatasetError(
                f"class indices {wrong[:5]} in {dataset.root} are outside the model's 0..{classes - 1}; fix the "
                "labels (or the folder names)"
            )


def check_evaluation(source: Any, dataset: Dataset, *, batch: int) -> None:
    """What ``evaluate`` refuses before any image runs, each a one-line error (the command calls it before it
    starts its progress bar)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1 (images per inference call); got {batch}")
    if not len(dataset):  # a Dataset built by hand (load_dataset refuses an empty folder itself)
        raise DatasetError(f"no images to evaluate in {dataset.root}")
    check_labels(source, dataset)


def default_targets(source: Any) -> list[str]:
    """FP32 ONNX Runtime, and its INT8 graph where the artifact holds one that passed its export gate."""
    from export.int8.roles import INT8_FUSED_ROLE, INT8_ROLE

    manifest = source.manifest
    has_int8 = manifest is not None and any(e.role in (INT8_ROLE, INT8_FUSED_ROLE) for e in manifest.files.values())
    return ["onnxruntime", "onnxruntime:int8"] if has_int8 else ["onnxruntime"]


def load_runners(source: Any, *, targets: Sequence[str], reference: str, threads: int | None) -> dict[str, Any]:
    """Every target's and the reference's runner, active: an unknown backend or precision, a missing INT8 graph or
    backend package (torch is imported only at activation) is refused here, before any image runs; on a refusal the
    ones already active are closed. ``evaluate`` closes them when it is done."""
    import runtime

    runners = {name: _load(runtime, source, name, threads) for name in dict.fromkeys([reference, *targets])}
    try:
        for runner in runners.values():
            runner.activate()
    except BaseException:
        for runner in runners.values():
            runner.deactivate()
        raise
    return runners


def evaluate(
    artifact: Any,  # a path, or a runtime.ModelSource already opened
    dataset: Dataset,
    *,
    targets: Sequence[str],
    reference: str = "torch",
    batch: int = 8,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    runners: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every target and the reference over ``dataset`` in batches; accuracy (with labels) and agreement.
    ``runners``: ``load_runners``' result, where the caller opened them first."""
    from contextlib import ExitStack

    import runtime
    from runtime.preprocess import preprocess_images, preprocessing_for

    source = runtime.open_source(artifact)
    check_evaluation(source, dataset, batch=batch)
    preprocessing = preprocessing_for(source)
    results = {name: TargetResult(name) for name in targets}
    if runners is None:
        runners = load_runners(source, targets=targets, reference=reference, threads=threads)
    with ExitStack() as stack:
        runners = {name: stack.enter_context(runner) for name, runner in runners.items()}
        for start in range(0, len(dataset), batch):
            paths = dataset.images[start : start + batch]
            x = preprocess_images(paths, preprocessing)
            labels = np.asarray(dataset.labels[start : start + batch]) if dataset.labels is not None else None
            ref = runners[reference].infer(x)
            for name in targets:
                results[name].add(runners[name].infer(x), ref, labels)
            if progress is not None:
                progress(len(paths))
        for name in targets:
            results[name].described = runners[name].describe()
    return {
        "artifact": str(source.directory or source.model_path),
        "model": source.model_name,
        "data": {"root": str(dataset.root), "kind": dataset.kind, "images": len(dataset)},
        "reference": reference,
        "results": [results[name].to_dict(labelled=dataset.labels is not None) for name in targets],
    }


def _load(runtime: Any, source: Any, target: str, threads: int | None) -> Any:
    backend, precision = parse_target(target)
    options: dict[str, Any] = {"threads": threads, "check_finite": True}  # NaN logits are an error, not a score
    if precision != "fp32":
        options["precision"] = precision
    return runtime.load(source, backend, **options)
