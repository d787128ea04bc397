"""Calibration data for static INT8 quantisation: real photographs, never noise.

By default the photographs bundled with scikit-image (``models.transforms.PHOTO_NAMES``), each drawn several times
through seeded augmentations (random resized crop with scale 0.35–1 and aspect 3/4–4/3, horizontal flip, ±20 %
brightness and contrast) and then the model's own eval transform, so the ranges see objects at several scales and
exposures. A user's directory or file list is used as given (eval transform only, sorted, the first ``count``).

Bad input is refused before any graph is written: a missing or empty directory, a file that is not a readable image.
Fewer than ``MIN_DISTINCT_IMAGES`` user images is allowed with a warning that gives the count.
"""

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
METHODS = ("minmax", "entropy", "percentile")
MAX_CALIB_COUNT = 1024  # 10⁸ ran the whole FP32 export, then the OOM killer ended the machine's largest process
# The U8S8 CPU graphs' weight range. x86 CPUs without VNNI (AVX2 only: AMD Zen 1–3, Intel before Ice Lake/Cascade
# Lake) multiply uint8 × int8 pairs with vpmaddubsw, whose 16-bit sum of two products saturates above 32767: with
# 8-bit weights (|w| ≤ 127) a pair can reach 2 × 255 × 127 = 64770, with 7-bit weights (|w| ≤ 64) 32640 never does.
# 7 bits run the same on every CPU; 8 bits keep one more bit where VNNI or AMX sums in 32 bits (README: INT8).
WEIGHT_BITS = (7, 8)
MIN_DISTINCT_IMAGES = 16  # below this a user's set gets a warning: ranges from a handful of images may clip


class CalibrationImageError(ValueError):
    """Calibration images are missing, empty or unreadable."""


class Int8RequestError(ValueError):
    """An INT8 export that cannot keep SGE in float (the compact SGE form hides the structure that finds it)."""


@dataclass(frozen=True)
class CalibrationOptions:
    """How the INT8 graphs are calibrated (``scripts/export.py --calib-*``), and the CPU graphs' weight range
    (``--int8-weight-bits``)."""

    images: tuple[Path, ...] = ()  # a directory, or image files; empty: the bundled photographs, augmented
    method: str = "minmax"
    count: int = 32  # calibration samples (augmented draws of the bundled photographs, or the first N user images)
    seed: int = 0
    cpu_weight_bits: int = 7  # of the U8S8 CPU graphs (WEIGHT_BITS); TensorRT's S8S8 graph always has 8

    def __post_init__(self) -> None:
        if self.cpu_weight_bits not in WEIGHT_BITS:
            raise CalibrationImageError(f"--int8-weight-bits must be 7 or 8; got {self.cpu_weight_bits}")
        if self.method not in METHODS:
            raise CalibrationImageError(f"--calib-method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if not 1 <= self.count <= MAX_CALIB_COUNT:
            raise CalibrationImageError(
                f"--calib-count must lie in 1..{MAX_CALIB_COUNT} (every sample is held in memory with its "
                f"activations; a few hundred representative photographs are plenty); got {self.count}"
            )

    def to_dict(self) -> dict[str, object]:
        return {
            # absolute: the manifest's re-export command (export/reexport.py) then works from any folder
            "images": [str(p.absolute()) for p in self.images] or "bundled photographs, augmented",
            "method": self.method,
            "count": self.count,
            "seed": self.seed,
            "cpu_weight_bits": self.cpu_weight_bits,
        }


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``paths`` (directories are listed, recursively, sorted); refuses an empty result."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(  # hidden files and folders (._x.jpg, .ipynb_checkpoints) are no photographs of it
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p.relative_to(path))
            )
        elif path.is_file():
            files.append(path)
        else:
            raise CalibrationImageError(f"calibration image path {path} does not exist; give a directory or files")
    if not files:
        shown = ", ".join(map(str, paths))
        raise CalibrationImageError(
            f"no calibration images in {shown} (looked for {', '.join(IMAGE_SUFFIXES)}); give photographs "
            "representative of the deployment, or leave --calib-images out to use the bundled ones"
        )
    return files


def calibration_batch(
    options: CalibrationOptions,
    *,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """(N, 3, h, w) float32 calibration inputs, preprocessed as the model's inputs are."""
    from models.transforms import ImageReadError, eval_transform, load_transformed, sample_photos

    mean, std = tuple(mean), tuple(std)
    if not options.images:
        photos = list(sample_photos().values())
        rng = np.random.default_rng(options.seed)
        draws = [augment(photos[i % len(photos)], rng) for i in range(options.count)]
        logger.info("calibration: %d augmented draws of %d bundled photographs", len(draws), len(photos))
        return np.stack([eval_transform(img, size=size, mean=mean, std=std) for img in draws])
    files = image_files(options.images)[: options.count]
    if len(files) < MIN_DISTINCT_IMAGES:
        logger.warning(
            "only %d calibration image%s; ranges measured on so few may clip real inputs: give at least %d",
            len(files),
            "" if len(files) == 1 else "s",
            MIN_DISTINCT_IMAGES,
        )
    batch = []
    for path in files:
        try:
            batch.append(load_transformed(path, size=size, mean=mean, std=std))
        except ImageReadError as err:  # its own reason, naming the file: unreadable, too large, too elongated
            raise CalibrationImageError(f"{err} (a calibration image: fix it or leave it out)") from err
    return np.stack(batch)


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One seeded draw: random resized crop, horizontal flip, brightness and contrast jitter (uint8 in and out)."""
    h, w = image.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(0.35, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch, cw = round(np.sqrt(area / aspect)), round(np.sqrt(area * aspect))
        if 0 < ch <= h and 0 < cw <= w:
            break
    else:
        ch, cw = h, w
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = image[top : top + ch, left : left + cw].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    brightness, contrast = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)
    crop = (crop - crop.mean()) * contrast + crop.mean() * brightness
    return np.ascontiguousarray(np.clip(crop, 0, 255).astype(np.uint8))


class BatchReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over an array: one image per ``get_next``, restartable."""

    def __init__(self, batch: np.ndarray, *, input_name: str) -> None:
        self.batch = batch
        self.input_name = input_name
        self._items: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def rewind(self) -> None:
        self._items = ({self.input_name: self.batch[i : i + 1]} for i in range(len(self.batch)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def __len__(self) -> int:
        return len(self.batch)
