"""Image files → the normalised NCHW float32 batch a model takes, with the artifact's own preprocessing.

The transform is the project's ImageNet evaluation transform (``models.transforms.eval_transform``); its size,
mean and std come from the manifest's ``preprocessing`` when it has them, else from the model's registered config,
else from the model's input shape with the ImageNet statistics.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import MANIFEST_NAME, ArtifactError
from export.spec import MAX_INPUT_SIDE, fits_input_side
from models.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, load_transformed
from runtime.source import ModelSource


@dataclass(frozen=True)
class Preprocessing:
    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.size), "mean": list(self.mean), "std": list(self.std), "layout": "NCHW"}


def preprocessing_for(source: ModelSource) -> Preprocessing:
    """The preprocessing an artifact records; gaps are filled from the model's config, then from its input shape."""
    recorded = source.manifest.preprocessing if source.manifest is not None else {}
    default = Preprocessing()
    if source.model_name is not None and not {"input_size", "mean", "std"} <= recorded.keys():
        default = _registry_preprocessing(source.model_name) or default
    shape = source.input_spec.shape
    if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
        default = Preprocessing(size=(shape[2], shape[3]), mean=default.mean, std=default.std)
    key = "input_size" if "input_size" in recorded else "size"
    size = _recorded_size(recorded, key, source) if key in recorded else default.size
    return Preprocessing(
        size=size,
        mean=tuple(float(v) for v in recorded.get("mean", default.mean)),
        std=tuple(float(v) for v in recorded.get("std", default.std)),
    )


def _recorded_size(recorded: dict[str, Any], key: str, source: ModelSource) -> tuple[int, int]:
    """The manifest's (H, W), each side 1..MAX_INPUT_SIDE as an export's; else one ArtifactError naming the file (the
    manifest is not hashed: [20000, 20000] would decode a 400-megapixel image, [0, 0] fail inside the resize)."""
    size = recorded[key]
    try:
        h, w = (int(side) for side in size)
    except (TypeError, ValueError):
        h = w = 0
    if not fits_input_side(h, w):
        manifest = Path(source.directory or ".") / MANIFEST_NAME
        raise ArtifactError(
            f"{manifest}: preprocessing.{key} {size!r} must be two sides of 1..{MAX_INPUT_SIDE}; "
            "re-export the artifact or correct its manifest"
        )
    return h, w


def _registry_preprocessing(name: str) -> Preprocessing | None:
    """The model config's preprocessing; None for a model this checkout does not know, or without torch (the
    registry builds torch modules; a deploy-only install reads what the manifest records)."""
    try:
        from models import UnknownModelError, get_config
    except ImportError:
        return None
    try:
        config = get_config(name)
    except (UnknownModelError, ImportError):
        return None
    return Preprocessing(size=tuple(config.input_size), mean=tuple(config.mean), std=tuple(config.std))


def preprocess_images(paths: Sequence[str | Path], preprocessing: Preprocessing) -> np.ndarray:
    """Read and transform ``paths`` into an (N, 3, h, w) float32 batch; raises ImageReadError on a bad file."""
    if not paths:
        raise ValueError("no images given; pass one or more JPEG or PNG files")
    # one decoded image at a time: each may be up to MAX_IMAGE_PIXELS, only the small transformed arrays are kept
    p = preprocessing
    return np.stack([load_transformed(path, size=p.size, mean=p.mean, std=p.std) for path in paths])


def preprocess_arrays(images: Sequence[np.ndarray], preprocessing: Preprocessing) -> np.ndarray:
    """(H, W, 3) uint8 images → an (N, 3, h, w) float32 batch."""
    return np.stack(
        [
            eval_transform(image, size=preprocessing.size, mean=preprocessing.mean, std=preprocessing.std)
            for image in images
        ]
    )
