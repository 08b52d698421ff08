"""Turning uploads and frames into HxWx3 uint8 RGB arrays, or clear errors saying why not."""

from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
# The decoders an upload may reach: those of IMAGE_SUFFIXES (JPEG's also opens a phone camera's MPO). Pillow
# would otherwise try all of its ~40, EPS (which runs Ghostscript where installed) and FITS among them.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
# What a malformed file makes Pillow's decoders raise besides OSError (struct.error from bad EXIF or TIFF tags).
DECODE_ERRORS = (SyntaxError, EOFError, struct.error, IndexError, TypeError, ZeroDivisionError)
# Images over this many pixels are refused from their header, before any decoding: a 656 KB PNG can
# claim 15000x15000 and would take 2.8 GB decoded. 40 Mpx (e.g. 7300x5500) is above common cameras.
MAX_IMAGE_PIXELS = 40_000_000


def read_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Decode an image file (path or bytes) into RGB, upright by its EXIF orientation."""
    name = "upload" if isinstance(source, bytes) else Path(source).name
    PILImage.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with PILImage.open(io.BytesIO(source) if isinstance(source, bytes) else source,
                           formats=IMAGE_FORMATS) as image:
            check_pixel_count(image.size, name)
            image.load()
            return as_rgb_uint8(upright(image))
    except FileNotFoundError as error:
        raise ValueError(f"{name}: file not found") from error
    except UnidentifiedImageError as error:
        raise ValueError(f"{name}: not an image file, or a format that cannot be read") from error
    except PILImage.DecompressionBombError as error:  # PIL's own check, at twice the limit
        raise ValueError(f"{name}: image too large (at most {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)") from error
    except OSError as error:
        if error.errno is not None:  # the file system's (permissions, a folder): its reason, not its path
            raise ValueError(f"{name}: cannot be read ({error.strerror})") from error
        raise ValueError(f"{name}: corrupt or truncated image") from _logged(error)
    except DECODE_ERRORS as error:  # a malformed file deep in a decoder
        raise ValueError(f"{name}: corrupt or truncated image") from _logged(error)


def _logged(error: Exception) -> Exception:
    """The decoder's own words go to the log (they can name internals), not to the visitor."""
    logger.info("undecodable image: %s: %s", type(error).__name__, error)
    return error


def upright(image: PILImage.Image) -> PILImage.Image:
    """`image` turned upright by its EXIF orientation; as it is when the EXIF block is malformed."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # noqa: BLE001 (Pillow raises what its parsers meet: struct.error, KeyError, ...)
        logger.info("EXIF orientation ignored: %s: %s", type(error).__name__, error)
        return image


def check_pixel_count(size: tuple[int, int], name: str = "image") -> None:
    """Refuse an image whose (width, height), read from its header, exceeds `MAX_IMAGE_PIXELS`."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{name}: image too large ({width}x{height} pixels; at most "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)")


def as_rgb_uint8(image) -> np.ndarray:
    """Turn a PIL image or an array into an HxWx3 uint8 RGB array, or raise ValueError saying why not.

    Accepted: PIL images of any mode; arrays HxW (gray), HxWx1, HxWx3 (RGB), HxWx4 (RGBA/RGBX: the
    fourth channel is dropped, not composited, since 4-channel video frames often carry an unused,
    zero "alpha"). Values: uint8 as is; uint16 and 16-bit PIL modes >> 8; other integers are read as
    8-bit when they fit 0..255, else as 16-bit when they fit 0..65535; floats as [0, 1] when their
    maximum is <= 1, else as [0, 255] (clipped); bool as 0/255. A uint8 RGB C-contiguous array is
    returned as is, without a copy.
    """
    if image is None:
        raise ValueError("expected an image (PIL image or numpy array), got None")
    if isinstance(image, PILImage.Image):
        image = _pil_to_array(image)
    array = np.asarray(image)

    if array.size == 0:
        raise ValueError(f"image is empty (shape {array.shape})")
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if array.ndim != 3:
        raise ValueError(f"image must have 2 (HxW) or 3 (HxWxC) dimensions, got shape {array.shape}")
    channels = array.shape[2]
    if channels not in (1, 3, 4):
        raise ValueError(f"image must have 1, 3 or 4 channels, got {channels} (shape {array.shape})")

    array = _to_uint8(array)
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    elif channels == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def _pil_to_array(image: PILImage.Image) -> np.ndarray:
    # 16-bit, 32-bit integer and float modes would be clipped to 0..255 by PIL's convert("RGB");
    # take their raw values and let `_to_uint8` scale them.
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return np.asarray(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ValueError(f"integer image values must lie in 0..65535, got {low}..{high} ({array.dtype})")
        return array.astype(np.uint8) if high <= 255 else (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("float image contains NaN or infinite values")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        return np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype}; expected uint8, uint16, other integers, float or bool")


