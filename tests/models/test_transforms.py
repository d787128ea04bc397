"""The eval transform follows torchvision's integer arithmetic; transparency in any PNG mode goes over white."""

import io

import numpy as np
import pytest
from PIL import Image

from models.transforms import IMAGENET_MEAN, IMAGENET_STD, decode_rgb8, eval_transform


@pytest.mark.parametrize(
    ("width", "height", "resized", "corner"),
    [
        # torchvision: the short side 256, the long side int(256 · long / short) (truncated, not rounded), the crop's
        # offsets int(round(Δ / 2)) (half to even, not floored)
        ((640, 427, (383, 256), (80, 16))),  # 383.7 → 383; (383 − 224)/2 = 79.5 → 80
        ((427, 640, (256, 383), (16, 80))),
        ((1000, 667, (383, 256), (80, 16))),
        ((500, 375, (341, 256), (58, 16))),
    ],
)
def test_resize_and_crop_match_torchvision_arithmetic(width, height, resized, corner):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    by_hand = Image.fromarray(image).resize(resized, Image.BILINEAR, reducing_gap=None)
    left, top = corner
    crop = np.asarray(by_hand.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    expected = ((crop - mean) / std).transpose(2, 0, 1)
    np.testing.assert_array_equal(eval_transform(image), expected)


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
