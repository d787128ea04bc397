"""INT8 calibration for TensorRT 10.x: images from a folder, the model's eval transform, an entropy calibrator.

``IInt8EntropyCalibrator2`` (TensorRT 10.x only; 11.x removed calibrators in favour of Q/DQ ONNX) reads batches of
preprocessed images and caches the scales it computes. TensorRT calibrates at the calibration profile's OPT shape,
so the batches have the OPT batch size. The cache is reused only for the same ONNX, images and preprocessing: a
fingerprint of those is kept beside it (``calibration.cache.json``) and a stale cache is replaced. TensorRT's
binding swallows an exception raised inside ``get_batch`` and ends calibration early; the calibrator keeps the
error and ``check()`` raises it after the build. Listing, batching and fingerprints are pure and tested here.
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from export.artifacts import atomic_path, file_sha256
from models.transforms import load_transformed

if TYPE_CHECKING:
    from export.trt.route import Profile, TrtBuildOptions

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
        images = [load_transformed(p, size=size, mean=mean, std=std) for p in paths[start : start + batch_size]]
        yield np.ascontiguousarray(np.stack(images))


def fingerprint(
    *,
    onnx_sha256: str,
    paths: list[Path],
    batch: int,
    size: tuple[int, int],
    mean: tuple,
    std: tuple,
    trt_version: str,
) -> dict[str, Any]:
    """What the scales depend on: the graph, every image's bytes, the batch, the preprocessing, and the TensorRT
    release (a cache is not portable between releases; one TensorRT rejects is no calibration at all)."""
    images = hashlib.sha256()
    for path in paths:
        images.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return {
        "onnx_sha256": onnx_sha256,
        "images": len(paths),
        "images_sha256": images.hexdigest(),
        "batch": batch,
        "size": list(size),
        "mean": list(mean),
        "std": list(std),
        "tensorrt_version": trt_version,
    }


def fingerprint_path(cache: Path) -> Path:
    return cache.with_name(cache.name + ".json")


def read_fingerprint(cache: Path) -> dict[str, Any] | None:
    path = fingerprint_path(cache)
    if not cache.is_file() or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class CalibrationSource:
    """The batches to calibrate on (none when the cache is reused), where the scales go, and what to record."""

    batches: Iterator[np.ndarray]
    batch_size: int
    cache: Path
    fingerprint: dict[str, Any]
    expected_batches: int  # 0 when the cache is reused
    info: dict[str, Any]


def calibration_source(
    options: "TrtBuildOptions", profile: "Profile", *, cache: Path, onnx_sha256: str, trt_version: str
) -> CalibrationSource:
    """Batches of the profile's OPT batch from ``options.calib_dir``, or the cache when it was made from the same
    ONNX, images and preprocessing by this TensorRT release; a stale cache is removed, a cache without a folder
    must match the ONNX and the release."""
    batch, size = profile.opt[0], (profile.opt[2], profile.opt[3])
    saved = read_fingerprint(cache)
    if options.calib_dir is None:
        why = None
        if saved is None:
            why = "has no record of its inputs"
        elif saved.get("onnx_sha256") != onnx_sha256:
            why = "was made for another ONNX"
        elif saved.get("tensorrt_version") != trt_version:
            why = f"was made by TensorRT {saved.get('tensorrt_version') or '(unrecorded)'}, not {trt_version}"
        if why is not None:
            raise CalibrationDataError(
                f"the calibration cache {cache} {why}; pass --trt-calib-dir DIR to calibrate this model again"
            )
        logger.info("INT8: reusing the calibration cache %s (%d images)", cache, saved["images"])
        return CalibrationSource(iter(()), batch, cache, saved, 0, {**_info(cache, saved), "reused_cache": True})
    paths = list_calibration_images(options.calib_dir, batch_size=batch, max_images=options.calib_max_images)
    wanted = fingerprint(
        onnx_sha256=onnx_sha256,
        paths=paths,
        batch=batch,
        size=size,
        mean=options.mean,
        std=options.std,
        trt_version=trt_version,
    )
    if saved == wanted:
        logger.info("INT8: the calibration cache %s matches these images and this ONNX; reusing it", cache)
        return CalibrationSource(iter(()), batch, cache, wanted, 0, {**_info(cache, wanted), "reused_cache": True})
    if cache.exists():
        logger.warning("INT8: the calibration cache %s was made from other inputs; calibrating again", cache)
        cache.unlink()
        fingerprint_path(cache).unlink(missing_ok=True)
    batches = calibration_batches(paths, batch_size=batch, size=size, mean=options.mean, std=options.std)
    info = {**_info(cache, wanted), "folder": str(options.calib_dir), "reused_cache": False}
    return CalibrationSource(batches, batch, cache, wanted, len(paths) // batch, info)


def _info(cache: Path, print_: dict[str, Any]) -> dict[str, Any]:
    return {"cache": cache.name, "images": print_["images"], "batch": print_["batch"]}


def cuda_upload(batch: np.ndarray) -> tuple[Any, int]:
    """Copy a batch to the GPU with torch.cuda; return the tensor (kept alive) and its device address."""
    import torch

    device = torch.from_numpy(batch).to("cuda")
    return device, device.data_ptr()


def make_entropy_calibrator(
    trt: Any, source: CalibrationSource, *, upload: Callable[[np.ndarray], tuple[Any, int]] | None = None
) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``source``; ``check()`` after the build raises what went wrong inside."""
    upload = upload or cuda_upload

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = source.batches
            self._device: Any = None  # kept alive until TensorRT asks for the next batch
            self.batches_read = 0
            self.error: BaseException | None = None

        def get_batch_size(self) -> int:
            return source.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                batch = next(self._batches, None)
                if batch is None:
                    return None  # no more data: TensorRT computes the scales
                self._device, address = upload(batch)
            except Exception as err:  # the binding would swallow it: keep it for check()
                self.error = err
                return None
            self.batches_read += 1
            return [address] * len(names)

        def read_calibration_cache(self) -> bytes | None:
            return source.cache.read_bytes() if source.expected_batches == 0 and source.cache.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            with atomic_path(source.cache) as tmp:
                tmp.write_bytes(bytes(cache))
            with atomic_path(fingerprint_path(source.cache)) as tmp:  # after the cache: a cache never looks newer
                tmp.write_text(json.dumps(source.fingerprint, indent=2))

        def check(self) -> None:
            if self.error is not None:
                self._discard()
                raise CalibrationDataError(
                    f"INT8 calibration stopped after {self.batches_read} of {source.expected_batches} batches: "
                    f"{self.error}; fix or remove that image and build again"
                ) from self.error
            if self.batches_read < source.expected_batches:
                self._discard()
                raise CalibrationDataError(
                    f"INT8 calibration read {self.batches_read} of {source.expected_batches} batches; build again"
                )

        def _discard(self) -> None:
            source.cache.unlink(missing_ok=True)
            fingerprint_path(source.cache).unlink(missing_ok=True)

    return EntropyCalibrator()
