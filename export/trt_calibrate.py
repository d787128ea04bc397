"""INT8 calibration for TensorRT 10.x: images from a folder, the model's eval transform, an entropy calibrator.

``IInt8EntropyCalibrator2`` (TensorRT 10.x only; 11.x removed calibrators in favour of Q/DQ ONNX) reads fixed-size
batches of preprocessed images and caches the scales it computes; a later build reuses the cache and reads no
images. Image listing and batching are pure and tested here; the calibrator itself needs TensorRT and a GPU.
"""

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from export.artifacts import atomic_path
from models.transforms import eval_transform, load_image

if TYPE_CHECKING:
    from export.trt_build import Profile, TrtBuildOptions

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})


class CalibrationDataError(ValueError):
    """The calibration folder is missing, empty, or holds fewer images than one batch."""


def list_calibration_images(directory: str | Path, *, batch_size: int, max_images: int = 512) -> list[Path]:
    """Sorted image files in ``directory`` (not recursive), at most ``max_images``, whole batches only."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CalibrationDataError(f"calibration folder {directory} does not exist; pass a folder of JPEG/PNG images")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:max_images]
    if len(paths) < batch_size:
        raise CalibrationDataError(
            f"calibration folder {directory} has {len(paths)} images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            f"INT8 calibration needs at least one batch of {batch_size}: add images or lower the calibration batch"
        )
    whole = len(paths) - len(paths) % batch_size
    if whole < len(paths):
        logger.info("calibrating on %d of %d images (whole batches of %d)", whole, len(paths), batch_size)
    return paths[:whole]


def calibration_batches(
    paths: list[Path],
    *,
    batch_size: int,
    size: tuple[int, int],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> Iterator[np.ndarray]:
    """Yield (batch_size, 3, h, w) float32 batches, preprocessed exactly as at inference (``eval_transform``)."""
    for start in range(0, len(paths) - batch_size + 1, batch_size):
        images = [
            eval_transform(load_image(p), size=size, mean=mean, std=std) for p in paths[start : start + batch_size]
        ]
        yield np.ascontiguousarray(np.stack(images))


def calibration_source(
    options: "TrtBuildOptions", profile: "Profile", *, cache: Path
) -> tuple[Iterator[np.ndarray], dict[str, Any]]:
    """The batches to calibrate on (none when a cache exists and no folder was given) and what to record of them."""
    if options.calib_dir is None:
        logger.info("INT8: reusing the calibration cache %s", cache)
        return iter(()), {"cache": cache.name, "images": 0, "reused_cache": True}
    paths = list_calibration_images(
        options.calib_dir, batch_size=options.calib_batch, max_images=options.calib_max_images
    )
    size = (profile.opt[2], profile.opt[3])
    batches = calibration_batches(paths, batch_size=options.calib_batch, size=size, mean=options.mean, std=options.std)
    info = {"cache": cache.name, "images": len(paths), "batch": options.calib_batch, "folder": str(options.calib_dir)}
    return batches, info


def make_entropy_calibrator(trt: Any, batches: Iterable[np.ndarray], *, batch_size: int, cache_path: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``batches`` (device copies through torch.cuda), caching to ``cache_path``."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._device: torch.Tensor | None = None  # kept alive until TensorRT asks for the next batch

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None  # no more data: TensorRT computes the scales
            self._device = torch.from_numpy(batch).to("cuda")
            return [self._device.data_ptr()] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            with atomic_path(cache_path) as tmp:
                tmp.write_bytes(bytes(cache))

    return EntropyCalibrator()
