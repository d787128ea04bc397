"""Calibration data for TensorRT 10.x INT8: the folder, whole batches, and preprocessing identical to inference."""

import numpy as np
import pytest
from PIL import Image

from export.trt_build import Profile, TrtBuildOptions
from export.trt_calibrate import CalibrationDataError, calibration_batches, calibration_source, list_calibration_images
from models.transforms import eval_transform, sample_photos


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


def test_source_uses_the_profile_size_or_the_cache_alone(photo_dir, tmp_path):
    profile = Profile("input", (1, 3, 96, 96), (4, 3, 96, 96), (8, 3, 96, 96))
    batches, info = calibration_source(
        TrtBuildOptions(precision="int8", calib_dir=photo_dir, calib_batch=2), profile, cache=tmp_path / "c.cache"
    )
    assert next(batches).shape == (2, 3, 96, 96) and info["images"] == 4
    batches, info = calibration_source(TrtBuildOptions(precision="int8"), profile, cache=tmp_path / "c.cache")
    assert list(batches) == [] and info["reused_cache"]
