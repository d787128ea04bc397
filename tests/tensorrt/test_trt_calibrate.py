"""Calibration data for TensorRT 10.x INT8: the folder, whole batches, and preprocessing identical to inference."""

import json

import numpy as np
import pytest
from PIL import Image

from export.trt.calibrate import (
    CalibrationDataError,
    calibration_batches,
    calibration_source,
    fingerprint_path,
    list_calibration_images,
)
from export.trt.route import Profile, TrtBuildOptions
from models.transforms import eval_transform, sample_photos

TRT = "10.13.0.35"  # the release a cache was made by, as trt.__version__ reads


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    for name, img in sample_photos(("astronaut", "chelsea", "coffee", "rocket", "camera")).items():
        Image.fromarray(img).save(folder / f"{name}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_errors(tmp_path):
    with pytest.raises(CalibrationDataError, match="does not exist"):
        list_calibration_images(tmp_path / "missing", batch_size=2)
    with pytest.raises(CalibrationDataError, match=r"has 0 images.*at least one batch of 2"):
        list_calibration_images(tmp_path, batch_size=2)


def test_whole_batches_of_images_only(photo_dir):
    paths = list_calibration_images(photo_dir, batch_size=2)
    assert [p.name for p in paths] == ["astronaut.png", "camera.png", "chelsea.png", "coffee.png"]  # 5 → 4
    assert len(list_calibration_images(photo_dir, batch_size=1, max_images=3)) == 3


def test_batches_are_preprocessed_like_inference(photo_dir):
    paths = list_calibration_images(photo_dir, batch_size=2)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    batches = list(calibration_batches(paths, batch_size=2, size=(64, 64), mean=mean, std=std))
    assert [b.shape for b in batches] == [(2, 3, 64, 64)] * 2 and batches[0].dtype == np.float32
    astronaut = np.asarray(Image.open(paths[0]).convert("RGB"))
    np.testing.assert_array_equal(batches[0][0], eval_transform(astronaut, size=(64, 64), mean=mean, std=std))


def test_source_batches_at_the_profile_opt_shape(photo_dir, tmp_path):
    # TensorRT calibrates at the calibration profile's OPT shape: batches of OPT, at the profile's image size.
    options = TrtBuildOptions(precision="int8", calib_dir=photo_dir)
    for opt, images in ((2, 4), (4, 4), (1, 5)):
        profile = Profile("input", (1, 3, 96, 96), (opt, 3, 96, 96), (8, 3, 96, 96))
        source = calibration_source(options, profile, cache=tmp_path / "c.cache", onnx_sha256="a" * 64, trt_version=TRT)
        assert source.batch_size == opt and source.expected_batches == images // opt
        assert next(source.batches).shape == (opt, 3, 96, 96) and source.info["images"] == images
    with pytest.raises(CalibrationDataError, match=r"at least one batch of 16"):
        profile = Profile("input", (1, 3, 96, 96), (16, 3, 96, 96), (32, 3, 96, 96))
        calibration_source(options, profile, cache=tmp_path / "c.cache", onnx_sha256="a" * 64, trt_version=TRT)


def test_cache_reused_only_for_the_same_onnx_images_and_preprocessing(photo_dir, tmp_path):
    profile = Profile("input", (1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))
    cache = tmp_path / "calibration.cache"
    options = TrtBuildOptions(precision="int8", calib_dir=photo_dir)
    first = calibration_source(options, profile, cache=cache, onnx_sha256="a" * 64, trt_version=TRT)
    cache.write_bytes(b"scales")  # what the calibrator writes, then its fingerprint
    fingerprint_path(cache).write_text(json.dumps(first.fingerprint))

    same = calibration_source(options, profile, cache=cache, onnx_sha256="a" * 64, trt_version=TRT)
    assert same.expected_batches == 0 and same.info["reused_cache"] and same.info["images"] == 4
    alone = calibration_source(
        TrtBuildOptions(precision="int8"), profile, cache=cache, onnx_sha256="a" * 64, trt_version=TRT
    )
    assert alone.info == same.info  # the sidecar reports the images the cache was made from

    with pytest.raises(CalibrationDataError, match=r"made for another ONNX.*--trt-calib-dir"):
        calibration_source(
            TrtBuildOptions(precision="int8"), profile, cache=cache, onnx_sha256="b" * 64, trt_version=TRT
        )
    re_export = calibration_source(options, profile, cache=cache, onnx_sha256="b" * 64, trt_version=TRT)
    assert re_export.expected_batches == 2 and not cache.exists()  # stale cache removed before calibrating

    cache.write_bytes(b"scales")
    fingerprint_path(cache).write_text(json.dumps(first.fingerprint))
    other = TrtBuildOptions(precision="int8", calib_dir=photo_dir, mean=(0.5, 0.5, 0.5))
    assert calibration_source(other, profile, cache=cache, onnx_sha256="a" * 64, trt_version=TRT).expected_batches == 2
    with pytest.raises(CalibrationDataError, match="has no record of its inputs"):
        cache.write_bytes(b"scales from somewhere")
        calibration_source(
            TrtBuildOptions(precision="int8"), profile, cache=cache, onnx_sha256="a" * 64, trt_version=TRT
        )


def test_a_cache_from_another_tensorrt_release_is_never_reused(photo_dir, tmp_path):
    # A release may reject an older cache; reused, the build would then calibrate on nothing (0 batches expected).
    profile = Profile("input", (1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))
    cache = tmp_path / "calibration.cache"
    options = TrtBuildOptions(precision="int8", calib_dir=photo_dir)
    older = calibration_source(options, profile, cache=cache, onnx_sha256="a" * 64, trt_version="10.12.0.36")
    cache.write_bytes(b"scales")
    fingerprint_path(cache).write_text(json.dumps(older.fingerprint))
    with pytest.raises(CalibrationDataError, match=r"made by TensorRT 10\.12\.0\.36, not 10\.13.*--trt-calib-dir"):
        calibration_source(
            TrtBuildOptions(precision="int8"), profile, cache=cache, onnx_sha256="a" * 64, trt_version=TRT
        )
    again = calibration_source(options, profile, cache=cache, onnx_sha256="a" * 64, trt_version=TRT)
    assert again.expected_batches == 2 and not cache.exists()  # calibrated anew, the old cache removed first
