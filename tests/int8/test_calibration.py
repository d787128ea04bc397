"""Calibration inputs are real photographs (bundled and augmented, or the user's), and bad ones are refused."""

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.int8.calibration import (
    MIN_DISTINCT_IMAGES,
    CalibrationImageError,
    CalibrationOptions,
    calibration_batch,
    image_files,
)
from models.transforms import IMAGENET_MEAN, IMAGENET_STD

SIZE = (48, 48)


def batch(options):
    return calibration_batch(options, size=SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def neighbour_correlation(x):
    """Correlation of horizontally adjacent pixels: ~0.9 for photographs, ~0 for noise."""
    a, b = x[..., :-1].ravel(), x[..., 1:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_bundled_draws_are_augmented_photographs_not_noise():
    x = batch(CalibrationOptions(count=10, seed=3))
    assert x.shape == (10, 3, *SIZE) and x.dtype == np.float32
    lo = (0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    hi = (1 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert (x.min(axis=(0, 2, 3)) >= lo - 1e-5).all() and (x.max(axis=(0, 2, 3)) <= hi + 1e-5).all()
    assert min(neighbour_correlation(sample) for sample in x) > 0.5
    noise = np.random.default_rng(0).standard_normal(x.shape[1:]).astype(np.float32)
    assert neighbour_correlation(noise) < 0.1  # the check above would catch noise
    # 10 draws of 7 photographs: the 8th draw is the 1st photograph again, differently augmented
    assert not np.allclose(x[0], x[7])


def test_bundled_draws_cycle_through_every_photograph():
    """The 7th bundled photograph ("camera") is the only greyscale one: of 14 draws, exactly the 7th and 14th have
    equal red, green and blue, so every photograph is drawn in turn (all from one photograph would give 0 or 14)."""
    from models.transforms import sample_photos

    photos = list(sample_photos().values())
    x = batch(CalibrationOptions(count=2 * len(photos), seed=5))
    pixels = (
        x * np.asarray(IMAGENET_STD, np.float32)[:, None, None] + np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    )
    grey = [bool(np.abs(d[0] - d[1]).max() < 1e-5 and np.abs(d[1] - d[2]).max() < 1e-5) for d in pixels]
    source_grey = [bool((p[..., 0] == p[..., 1]).all() and (p[..., 1] == p[..., 2]).all()) for p in photos]
    assert grey == source_grey * 2 and 0 < sum(grey) < len(grey)


def test_the_calibration_reader_gives_every_image_once_then_again_after_rewind():
    from export.int8.calibration import BatchReader

    images = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    reader = BatchReader(images, input_name="input")
    for _ in range(2):  # ORT's calibrator may read the data twice (rewind between)
        items = iter(reader.get_next, None)
        seen = [item["input"] for item in items]
        assert len(seen) == len(reader) == 5 and all(s.shape == (1, 3, 2, 2) for s in seen)
        np.testing.assert_array_equal(np.concatenate(seen), images)
        reader.rewind()


def test_bundled_draws_are_seeded():
    assert np.array_equal(batch(CalibrationOptions(count=4, seed=1)), batch(CalibrationOptions(count=4, seed=1)))
    assert not np.array_equal(batch(CalibrationOptions(count=4, seed=1)), batch(CalibrationOptions(count=4, seed=2)))


def write_photos(directory, n):
    from models.transforms import sample_photos

    directory.mkdir(parents=True, exist_ok=True)
    photos = list(sample_photos().values())
    for i in range(n):
        Image.fromarray(photos[i % len(photos)]).save(directory / f"img{i:02d}.png")
    return directory


def test_user_directory_is_used_as_given_and_few_images_warn(tmp_path, caplog):
    folder = write_photos(tmp_path / "calib", 3)
    (folder / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="export.int8.calibration"):
        x = batch(CalibrationOptions(images=(folder,), count=32))
    assert x.shape[0] == 3  # the three PNGs; the text file is not an image
    assert "only 3 calibration images" in caplog.text and str(MIN_DISTINCT_IMAGES) in caplog.text


def test_the_record_names_calibration_images_by_absolute_path(tmp_path, monkeypatch):
    # given relative to the export's folder, they would name other files (or none) in the re-export command that
    # validate and the saturation note print, run from anywhere else
    from export.reexport import calibration_words

    monkeypatch.chdir(tmp_path)
    write_photos(tmp_path / "calib", 1)
    record = CalibrationOptions(images=(Path("calib"), Path("calib/img00.png"))).to_dict()
    assert record["images"] == [str(tmp_path / "calib"), str(tmp_path / "calib" / "img00.png")]
    assert calibration_words({"calibration": record})[:3] == ["--calib-images", *record["images"]]
    assert CalibrationOptions().to_dict()["images"] == "bundled photographs, augmented"


def test_calib_count_caps_user_images(tmp_path):
    folder = write_photos(tmp_path / "calib", 5)
    assert batch(CalibrationOptions(images=(folder,), count=2)).shape[0] == 2


@pytest.mark.parametrize("case", ["empty-dir", "missing", "unreadable", "too-large", "too-elongated", "only-hidden"])
def test_bad_calibration_images_raise_one_clear_error(tmp_path, case):
    from tests.runtime.test_image_decoding import bomb_png

    if case == "empty-dir":
        (tmp_path / "empty").mkdir()
        paths, match = (tmp_path / "empty",), "no calibration images"
    elif case == "missing":
        paths, match = (tmp_path / "nowhere",), "does not exist"
    elif case == "unreadable":
        bad = tmp_path / "broken.jpg"
        bad.write_bytes(b"not a jpeg")
        paths, match = (bad,), r"cannot read image .*broken\.jpg.* \(a calibration image: fix it or leave it out\)"
    elif case == "too-large":  # a valid PNG, called "unreadable" before
        paths, match = (bomb_png(tmp_path / "big.png", 10_000, 10_000),), r"big\.png has more than .*downscale it"
    elif case == "too-elongated":  # 1×6000: its resize before the crop would be 438000×73 pixels at 64×64
        strip = tmp_path / "strip.png"
        Image.fromarray(np.full((1, 6000, 3), 128, np.uint8)).save(strip)
        paths, match = (strip,), r"^image .*strip\.png: a 6000×1 image is too elongated .* \(a calibration image"
    else:  # macOS's ._ files and notebook checkpoints are no photographs of the deployment
        write_photos(tmp_path / "calib" / ".ipynb_checkpoints", 2)
        (tmp_path / "calib" / "._img00.png").write_bytes(b"\0\5\x16\7 AppleDouble")
        paths, match = (tmp_path / "calib",), "no calibration images"
    with pytest.raises(CalibrationImageError, match=match):
        batch(CalibrationOptions(images=paths))


def test_options_refuse_unknown_method_and_counts_out_of_range():
    with pytest.raises(CalibrationImageError, match="minmax"):
        CalibrationOptions(method="kl")
    for count in (0, 1025, 100_000_000):  # 10⁸ ran the whole FP32 export before the OOM killer ended it
        with pytest.raises(CalibrationImageError, match=rf"--calib-count must lie in 1\.\.1024 .*got {count}"):
            CalibrationOptions(count=count)


def test_image_files_lists_directories_recursively(tmp_path):
    write_photos(tmp_path / "a" / "b", 2)
    assert [p.name for p in image_files([tmp_path])] == ["img00.png", "img01.png"]


def test_entropy_calibration_clips_a_lone_outlier_where_minmax_keeps_it(tmp_path):
    """With ORT's defaults (128 bins for 128 levels) the entropy search had one threshold to try, minmax's: the
    '--calib-method entropy' graph was byte for byte the min-max one."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from export.int8.quantize import calibrate

    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32).reshape(4, 4, 1, 1), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "conv_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4, 8, 8])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    x = np.abs(np.random.default_rng(0).standard_normal((8, 4, 8, 8))).astype(np.float32)
    x[0, 0, 0, 0] = 40.0  # one activation far out of the rest's range

    def highest(method):
        path = calibrate(tmp_path / "m.onnx", x, input_name="x", method=method, ranges_path=tmp_path / f"{method}.json")
        value = json.loads(path.read_text())["data"]["z"]["highest"]
        return float(value["data"][0] if isinstance(value, dict) else value)

    assert highest("minmax") == 40.0 and highest("entropy") < 10.0
