"""The eval transform follows torchvision's integer arithmetic; transparency in any PNG mode goes over white."""

import io

import numpy as np
import pytest
from PIL import Image

from models.transforms import IMAGENET_MEAN, IMAGENET_STD, decode_rgb8, eval_transform


@pytest.mark.parametrize(
    ("width", "height", "size", "resized", "corner"),
    [
        # torchvision: the short side 256, the long side int(256 · long / short) (truncated, not rounded), the crop's
        # offsets int(round(Δ / 2)) (half to even, not floored)
        ((640, 427, (224, 224), (383, 256), (80, 16))),  # 383.7 → 383; (383 − 224)/2 = 79.5 → 80
        ((427, 640, (224, 224), (256, 383), (16, 80))),
        ((1000, 667, (224, 224), (383, 256), (80, 16))),
        ((500, 375, (224, 224), (341, 256), (58, 16))),
        # a non-square crop resizes for its longer side (224 → 256); (383 − 160)/2 = 111.5 → 112
        ((640, 427, (224, 160), (383, 256), (112, 16))),
        # the small exports' 96: round(96 / 0.875) = round(109.7) = 110, long side int(110 · 640 / 427) = 164
        ((640, 427, (96, 96), (164, 110), (34, 7))),
    ],
)
def test_resize_and_crop_match_torchvision_arithmetic(width, height, size, resized, corner):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    by_hand = Image.fromarray(image).resize(resized, Image.BILINEAR, reducing_gap=None)
    left, top = corner
    crop_h, crop_w = size
    crop = np.asarray(by_hand.crop((left, top, left + crop_w, top + crop_h)), dtype=np.float32) / 255.0
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    expected = ((crop - mean) / std).transpose(2, 0, 1)
    np.testing.assert_array_equal(eval_transform(image, size=size), expected)


def test_an_rgba_array_keeps_its_red_green_and_blue():
    image = np.zeros((8, 8, 4), np.uint8)
    image[..., 0], image[..., 3] = 255, 0  # pure red, fully transparent: an array's alpha is dropped, not composited
    pixels = eval_transform(image, size=(8, 8)) * np.asarray(IMAGENET_STD)[:, None, None]
    pixels += np.asarray(IMAGENET_MEAN)[:, None, None]
    np.testing.assert_allclose(pixels[:, 4, 4], [1.0, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(("mode", "background", "pixel"), [("L", 0, 200), ("RGB", (0, 0, 0), (200, 10, 10))])
def test_a_transparent_colour_in_grey_and_rgb_pngs_goes_over_white(mode, background, pixel):
    image = Image.new(mode, (4, 4), background)
    image.putpixel((1, 1), pixel)
    data = io.BytesIO()
    image.save(data, "PNG", transparency=background)  # a tRNS chunk: that colour is transparent
    data.seek(0)
    decoded = decode_rgb8(Image.open(data))
    opaque = (pixel,) * 3 if mode == "L" else pixel
    assert tuple(decoded[0, 0]) == (255, 255, 255) and tuple(decoded[1, 1]) == opaque


def test_a_transparent_grey_in_a_16_bit_png_goes_over_white():
    grey = np.full((4, 4), 40000, np.uint16)
    grey[0, 0] = 0  # the tRNS value: transparent, where it was decoded as black
    data = io.BytesIO()
    Image.fromarray(grey).save(data, "PNG", transparency=0)
    data.seek(0)
    opened = Image.open(data)
    assert opened.mode == "I;16" and opened.info["transparency"] == 0
    decoded = decode_rgb8(opened)
    assert tuple(decoded[0, 0]) == (255, 255, 255) and tuple(decoded[1, 1]) == (156, 156, 156)  # 40000/65535·255
