"""Image bytes -> pixel_values equals transformers' ViTImageProcessor; every bad image is a named InputError."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from minivlm.errors import InputError
from minivlm.processing.images import ImageLimits, preprocess_image_bytes

try:                                       # the default ViTImageProcessor backend needs torchvision
    import torchvision  # noqa: F401
    from transformers import ViTImageProcessor as Processor
except ImportError:
    from transformers import ViTImageProcessorPil as Processor

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def processor():
    # do_convert_rgb: the notebook's processor would reject RGBA / grayscale / palette images outright;
    # we convert them like transformers' convert_to_rgb (transparency over white), so compare against that.
    return Processor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                     do_convert_rgb=True)


def _photo(width: int = 320, height: int = 240) -> Image.Image:
    """Smooth gradients plus noise: resampling and JPEG both have real work to do."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _reference(processor, image: Image.Image) -> np.ndarray:
    return processor(image, return_tensors="np")["pixel_values"][0]


def _with_alpha(image: Image.Image) -> Image.Image:
    rgba = np.array(image.convert("RGBA"))
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1], dtype=np.uint8)[None, :]   # transparent -> opaque
    return Image.fromarray(rgba)


def _palette_with_transparency() -> Image.Image:
    image = _photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    image.info["transparency"] = 3
    return image


CASES = {
    "jpeg": lambda: _encode(_photo(), "JPEG", quality=90),
    "png": lambda: _encode(_photo(), "PNG"),
    "png_rgba": lambda: _encode(_with_alpha(_photo()), "PNG"),
    "png_grayscale": lambda: _encode(_photo().convert("L"), "PNG"),
    "png_palette": lambda: _encode(_photo().convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "png_palette_transparent": lambda: _encode(_palette_with_transparency(), "PNG", transparency=3),
    "jpeg_cmyk": lambda: _encode(_photo().convert("CMYK"), "JPEG"),
    "jpeg_tiny_8x8": lambda: _encode(_photo(8, 8), "JPEG"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_preprocessing_equals_vit_image_processor(processor, case):
    data = CASES[case]()
    ours = preprocess_image_bytes(data)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _reference(processor, Image.open(io.BytesIO(data))), atol=TOLERANCE, rtol=0)


def test_exif_rotated_jpeg_is_shown_upright(processor):
    """We honour EXIF orientation (the processor does not): the model sees what the user's viewer shows."""
    exif = Image.Exif()
    exif[0x0112] = 6                                    # orientation: rotate 90 degrees clockwise to view
    data = _encode(_photo(320, 200), "JPEG", exif=exif.tobytes())
    ours = preprocess_image_bytes(data)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert upright.size == (200, 320)
    np.testing.assert_allclose(ours, _reference(processor, upright), atol=TOLERANCE, rtol=0)
    assert np.abs(ours - _reference(processor, Image.open(io.BytesIO(data)))).max() > 0.1   # EXIF mattered


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with no pixel data: costs 50 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)          # 8-bit RGB
    chunk = b"IHDR" + ihdr
    iend = b"IEND"
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", 0) + iend + struct.pack(">I", zlib.crc32(iend)))


BAD_IMAGES = {
    "empty": (lambda: b"", "empty"),
    "corrupt": (lambda: b"this is not an image, just some text" * 4, "could not be decoded"),
    "truncated_jpeg": (lambda: _encode(_photo(), "JPEG")[:2000], "truncated"),
    "one_pixel": (lambda: _encode(Image.new("RGB", (1, 1)), "PNG"), "1x1 pixels; each side must be at least 8"),
    "thin_strip": (lambda: _encode(Image.new("RGB", (400, 4)), "PNG"), "400x4 pixels"),
    "header_20000x20000": (lambda: _png_header(20000, 20000), "too large to decode"),   # Pillow's bomb check
    "header_7000x7000": (lambda: _png_header(7000, 7000), "7000x7000 pixels; the limit is 40000000 pixels"),
    "too_many_bytes": (lambda: bytes(ImageLimits().max_bytes + 1), f"{ImageLimits().max_bytes + 1} bytes"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_raises_input_error_naming_the_problem(case):
    make, expected = BAD_IMAGES[case]
    with pytest.raises(InputError) as caught:
        preprocess_image_bytes(make())
    assert expected in str(caught.value)

