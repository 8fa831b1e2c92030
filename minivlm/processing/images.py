"""Encoded image bytes -> pixel values, equal to ViTImageProcessor (224x224 bilinear, 1/255, mean/std 0.5).

Unlike ViTImageProcessor, the EXIF orientation is applied first, so the model sees the picture the way
the user's viewer shows it.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from minivlm.errors import InputError

IMAGE_SIZE = 224          # the ensemble's pixel_values are fixed at 3x224x224
MEAN = 0.5
STD = 0.5


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000          # checked from the header, before the pixels are decoded
    min_side: int = 8


def decode_image(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Decode and validate an encoded image; every failure is an InputError that names the problem."""
    if not data:
        raise InputError("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InputError(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image.size, limits)
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"image is too large to decode ({error})") from None
    except UnidentifiedImageError:
        raise InputError(f"image could not be decoded: not a format Pillow recognises "
                         f"(first bytes {data[:8]!r})") from None
    except Exception as error:  # Pillow raises many types for corrupt or truncated data
        raise InputError(f"image could not be decoded ({type(error).__name__}: {error})") from None
    return image


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise InputError(f"image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels")
    if min(width, height) < limits.min_side:
        raise InputError(f"image is {width}x{height} pixels; each side must be at least {limits.min_side}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB; transparency is composited on white like transformers' convert_to_rgb."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def pixel_values(image: Image.Image) -> np.ndarray:
    """(3, 224, 224) float32, normalized like ViTImageProcessor."""
    resized = to_rgb(image).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) * np.float32(1 / 255)   # (H, W, 3)
    array = (array - MEAN) / STD
    return np.ascontiguousarray(array.transpose(2, 0, 1))                  # (3, H, W)


def preprocess_image_bytes(data: bytes, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    return pixel_values(decode_image(data, limits))
