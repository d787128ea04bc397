"""Images decode to the right 8-bit RGB whatever the file holds; bombs and unreadable files are one line, exit 2."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from models.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_IMAGE_PIXELS,
    ImageReadError,
    decode_rgb8,
    eval_transform,
    load_image,
    load_transformed,
    sample_photos,
)
from tests.conftest import save_photos


@pytest.fixture(scope="module")
def photo():
    return sample_photos(("chelsea",))["chelsea"][::4, ::4].copy()  # (75, 113, 3) uint8, a real photograph


# (file, pixel type, PIL mode, full scale): a 16-bit PNG at 65535 and a 32-bit TIFF at its own 2³¹ − 1, both exactly
DEEP_IMAGES = {
    "16-bit-png": ("grey16.png", np.uint16, "I;16", 65535),
    "32-bit-tiff": ("grey32.tif", np.int32, "I", 2**31 - 1),
}


@pytest.mark.parametrize("kind", sorted(DEEP_IMAGES))
def test_deep_images_scale_by_their_format_instead_of_saturating(tmp_path, photo, kind):
    name, pixel_type, mode, full_scale = DEEP_IMAGES[kind]
    grey8 = np.asarray(Image.fromarray(photo).convert("L"))
    path = tmp_path / name
    wide = grey8.astype(np.int64) * (full_scale // 255)  # 8-bit values spread over the format's range
    Image.fromarray(wide.astype(pixel_type)).save(path)
    assert Image.open(path).mode == mode
    decoded = load_image(path)
    assert decoded.dtype == np.uint8 and decoded.shape == (*grey8.shape, 3)
    np.testing.assert_array_equal(decoded[..., 0], grey8)
    assert (decoded == 255).mean() < 0.01


def test_a_dark_32_bit_frame_scales_like_a_bright_one(tmp_path):
    """The scale comes from the format, not the frame: a 32-bit TIFF whose values all fit 16 bits is dark, not
    stretched to full brightness; and an in-memory "I" image beyond 16 bits (no declared depth) is refused."""
    path = tmp_path / "dark32.tif"
    Image.fromarray(np.full((8, 8), 60000, dtype=np.int32)).save(path)
    assert Image.open(path).mode == "I" and load_image(path).max() == 0  # 60000 / (2³¹ − 1) of full scale
    with pytest.raises(ImageReadError, match="values above 65535"):
        decode_rgb8(Image.fromarray(np.full((8, 8), 70000, dtype=np.int32)))


def test_palette_and_cmyk_decode_to_rgb(tmp_path, photo):
    palette = Image.fromarray(photo).quantize(64)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    assert np.abs(load_image(tmp_path / "cmyk.jpg").astype(int) - [255, 0, 0]).max() <= 3


def test_exif_orientation_is_applied(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; a viewer rotates 90° clockwise
    Image.fromarray(photo).save(tmp_path / "turned.png", exif=exif)
    decoded = load_image(tmp_path / "turned.png")
    np.testing.assert_array_equal(decoded, np.rot90(photo, k=-1))


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red under a fully transparent alpha: invisible in a viewer
    rgba[0, 0] = (0, 0, 255, 255)  # one opaque blue pixel
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    decoded = load_image(tmp_path / "alpha.png")
    assert tuple(decoded[0, 0]) == (0, 0, 255) and (decoded[1:, 1:] == 255).all()


def bomb_png(path, width, height):
    """A valid PNG header declaring ``width``×``height`` 1-bit pixels: a few dozen bytes on disk."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("side", [20_000, 9_500], ids=["400MP", "90MP"])
def test_decompression_bomb_is_refused_from_its_header(tmp_path, side):
    assert side * side > MAX_IMAGE_PIXELS
    with pytest.raises(ImageReadError, match=r"more than the 89,478,485 pixels this tool decodes; downscale it first"):
        load_image(bomb_png(tmp_path / "bomb.png", side, side))


def test_bomb_and_garbage_through_infer_are_one_line_exit_2(artifact, tmp_path, capsys):
    from tests.runtime.test_scripts import load_script

    infer = load_script("infer")
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    for image in (bomb_png(tmp_path / "bomb.png", 20_000, 20_000), tmp_path / "garbage.jpg"):
        assert infer.main([str(artifact), str(image)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and image.name in err and "Traceback" not in err


def test_an_image_too_elongated_to_crop_is_refused_before_its_resize(artifact, tmp_path, capsys):
    # a 90-byte 1×3000 PNG: resizing its shorter side to 256 before the crop would allocate 768000×256 pixels
    import tracemalloc

    from tests.runtime.test_scripts import load_script

    strip = tmp_path / "strip.png"
    Image.fromarray(np.full((1, 3000, 3), 128, np.uint8)).save(strip)
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match=r"strip\.png: a 3000×1 image is too elongated for a 224×224 centre"):
            load_transformed(strip, size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD)
        assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    finally:
        tracemalloc.stop()
    assert load_script("infer").main([str(artifact), str(strip)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "strip.png" in err and "crop it" in err
    wide = Image.fromarray(np.full((20, 2000, 3), 128, np.uint8))  # 1:100, a panorama's ratio and more: still runs
    assert eval_transform(np.asarray(wide), size=(224, 224)).shape == (3, 224, 224)


def test_default_weights_are_a_visible_warning_and_marked_in_predictions(artifact, tmp_path, capsys, caplog):
    import json
    import logging

    import models
    from tests.runtime.test_scripts import load_script

    with caplog.at_level(logging.WARNING):  # the level scripts show without -v
        models.create_model("resnet18", init="random")
    assert "NOT trained" in caplog.text
    (image,), out = save_photos(tmp_path, ["chelsea"]), tmp_path / "preds.json"
    assert load_script("infer").main([str(artifact), str(image), "--top-k", "1", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "meaningless" in captured.err and "default weights, NOT trained" in captured.err  # the warning
    assert "NOT trained" in " ".join(captured.out.split())  # each table's title (it may wrap)
    result = json.loads(out.read_text())
    assert result["untrained"] is True and result["weights"].startswith("default-weights:")


def test_a_bare_onnx_file_with_a_fixed_batch_gets_exactly_that_batch(artifact, tmp_path, photo, capsys):
    import json

    import onnx

    from tests.runtime.test_scripts import load_script

    model = onnx.load(str(artifact / "model.onnx"))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 2  # a batch fixed at 2, as some exported files have
    fixed = tmp_path / "fixed2.onnx"
    onnx.save(model, str(fixed))
    images = []
    for i in range(3):  # one full batch and a partial one
        images.append(tmp_path / f"{i}.png")
        Image.fromarray(np.roll(photo, 7 * i, axis=1)).save(images[-1])
    assert load_script("infer").main([str(fixed), *map(str, images), "--top-k", "1", "--json", "-"]) == 0
    assert len(json.loads(capsys.readouterr().out)["predictions"]) == 3


def test_an_image_the_decoder_refuses_is_named(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.zeros((8, 8), dtype=np.float32)).save(path)
    with pytest.raises(ImageReadError, match=r"^image .*depth\.tiff: floating-point images are not supported; save"):
        load_image(path)
