"""The ImageNet evaluation transform, image decoding, and the real photographs bundled with scikit-image.

Eval transform as torchvision's reference recipe: resize the shorter side to crop/0.875 (256 for 224) with
bilinear, antialiased resampling (PIL), centre-crop, scale to [0, 1], subtract the mean and divide by the std.

Decoding gives 8-bit RGB whatever the file holds: the EXIF orientation is applied (as a viewer shows the photo);
16-bit and 32-bit integer images are scaled to 8 bits (not clipped, which would saturate nearly every pixel);
palette, grey and CMYK images are converted; transparency is composited over white. An image of more than
``MAX_IMAGE_PIXELS`` pixels (a decompression bomb, or just too large to be worth decoding) is refused from its
header, before any pixel is decoded.
"""

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Real photographs shipped inside the scikit-image wheel (no download at run time).
PHOTO_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "camera",
)


# Pillow's own default warning limit (0.25 GiB of 8-bit RGB); a 400-megapixel PNG of a few kB is refused from its
# header instead of being decoded into 1.2 GB.
MAX_IMAGE_PIXELS = 89_478_485
# The evaluation transform resizes the whole image before its centre crop: a 1×3000 strip would become 768000×256
# (0.6 GB). A real photograph's resize is far below this bound (1:64 at a 224 crop is 256×16384, 4.2 megapixels).
MAX_RESIZED_PIXELS = 16 * 2**20


class ImageReadError(ValueError):
    """An image file could not be decoded."""


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (see the module docstring for what is converted)."""
    return _read_image(path, decode=True)


def check_image(path: str | Path) -> None:
    """What ``load_image`` refuses from the file's header (not an image, too many pixels), without decoding it."""
    _read_image(path, decode=False)


def _read_image(path: str | Path, *, decode: bool) -> np.ndarray | None:
    too_large = f"more than the {MAX_IMAGE_PIXELS:,} pixels this tool decodes; downscale it first"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise ImageReadError(f"image {path} is {img.width}×{img.height} pixels, {too_large}")
                if not decode:
                    return None
                try:
                    return decode_rgb8(img)
                except ImageReadError as err:  # what the file holds: say which file
                    raise ImageReadError(f"image {path}: {err}") from None
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # Pillow's own check, in open()
        raise ImageReadError(f"image {path} has {too_large}") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}; give a JPEG or PNG file") from err


def integer_full_scale(img: Image.Image) -> float:
    """The value that maps to 255 for an integer image: its declared bit depth (a TIFF's BitsPerSample; 32-bit
    samples are signed in Pillow's "I" mode, so 2³¹ − 1), else 16 bits (PNG opens 16-bit data as "I" too). Never
    the image's own maximum: two frames of one camera must scale alike."""
    bits = getattr(img, "tag_v2", {}).get(258)  # TIFF BitsPerSample
    bits = bits[0] if isinstance(bits, tuple) else bits
    if isinstance(bits, int) and bits > 16:
        return float(2**31 - 1) if bits >= 32 else float(2**bits - 1)
    return 65535.0


def decode_rgb8(img: Image.Image) -> np.ndarray:
    """An opened PIL image → (H, W, 3) uint8 RGB: EXIF orientation applied, high bit depths scaled, alpha over white."""
    from PIL import ImageOps

    full_scale = integer_full_scale(img)  # read before exif_transpose, whose copy may drop the TIFF tags
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(img, dtype=np.float64)
        if wide.max(initial=0) > full_scale:
            raise ImageReadError(
                f"this {img.mode}-mode image holds values above {full_scale:.0f}, the largest its format declares; "
                "save it as an 8- or 16-bit PNG"
            )
        grey = np.clip(np.rint(wide * (255.0 / full_scale)), 0, 255).astype(np.uint8)
        key = img.info.get("transparency")  # a 16-bit tRNS grey value: matched before scaling, as in 8 bits below
        if isinstance(key, int) and not isinstance(key, bool):
            alpha = np.where(wide == key, 0, 255).astype(np.uint8)
            img = Image.fromarray(np.dstack([grey, alpha]), "LA")
        else:
            img = Image.fromarray(grey)
    elif img.mode == "F":
        raise ImageReadError("floating-point images are not supported; save it as an 8- or 16-bit PNG")
    if img.mode in ("P", "L", "RGB") and "transparency" in img.info:  # a tRNS colour: those pixels are transparent
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"))


def to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image; got shape {image.shape}")


# what eval_transform does besides the sizes and statistics, as an artifact's manifest records it
EVAL_PREPROCESSING = {"interpolation": "bilinear", "scale": 1 / 255, "layout": "NCHW", "color": "RGB"}


def eval_preprocessing(input_size: tuple[int, int]) -> dict[str, object]:
    """What ``eval_transform`` does at ``input_size`` (H, W), in a manifest's words (mean and std aside)."""
    h, w = input_size
    return {"input_size": [h, w], "resize_shorter": resize_for_crop(max(h, w)), **EVAL_PREPROCESSING}


def resize_for_crop(crop: int) -> int:
    """The shorter-side resize that precedes a centre crop (256 for 224, the 0.875 crop ratio)."""
    return round(crop / 0.875)


def eval_transform(
    image: np.ndarray,
    *,
    size: tuple[int, int] = (224, 224),
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> np.ndarray:
    """(H, W, 3) uint8 → (3, h, w) float32: resize the shorter side, centre-crop to ``size``, normalise."""
    img = Image.fromarray(to_rgb(np.asarray(image)).astype(np.uint8))
    crop_h, crop_w = size
    short = resize_for_crop(max(crop_h, crop_w))
    # torchvision's integer arithmetic: the shorter side exactly `short`, the longer one truncated; the crop's
    # offsets rounded half to even (Python's round)
    if img.width <= img.height:
        new_w, new_h = short, int(short * img.height / img.width)
    else:
        new_w, new_h = int(short * img.width / img.height), short
    new_w, new_h = max(crop_w, new_w), max(crop_h, new_h)
    if new_w * new_h > MAX_RESIZED_PIXELS:
        raise ImageReadError(
            f"a {img.width}×{img.height} image is too elongated for a {crop_h}×{crop_w} centre crop: its shorter side "
            f"resized to {short} makes it {new_w}×{new_h} pixels; crop it to the region of interest first"
        )
    img = img.resize((new_w, new_h), Image.BILINEAR, reducing_gap=None)
    left, top = round((new_w - crop_w) / 2.0), round((new_h - crop_h) / 2.0)
    arr = np.asarray(img.crop((left, top, left + crop_w, top + crop_h)), dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_transformed(
    path: str | Path, *, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    """``eval_transform(load_image(path))``; a refusal of either names the file."""
    image = load_image(path)
    try:
        return eval_transform(image, size=size, mean=mean, std=std)
    except ImageReadError as err:
        raise ImageReadError(f"image {path}: {err}") from None


def sample_photos(names: tuple[str, ...] = PHOTO_NAMES) -> dict[str, np.ndarray]:
    """The named scikit-image photographs as (H, W, 3) uint8 RGB arrays."""
    import skimage.data

    return {name: to_rgb(getattr(skimage.data, name)()) for name in names}


def photo_batch(
    size: tuple[int, int] = (224, 224),
    *,
    names: tuple[str, ...] = PHOTO_NAMES,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> np.ndarray:
    """The bundled photographs, eval-transformed, as an (N, 3, h, w) float32 batch."""
    photos = sample_photos(names)
    return np.stack([eval_transform(img, size=size, mean=mean, std=std) for img in photos.values()])
