"""Checks that a file really is a usable image, and reads its true properties.

Shared by ``marco sources validate`` and ingestion so that both quarantine the same
files for the same reasons. Height, width, channels and format always come from the
decoded image, never from the file name.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from components import filesystem

# Reasons an image is refused; stable strings, used as counter names and in reports.
EMPTY = "empty_file"
NOT_AN_IMAGE = "not_an_image"
UNSUPPORTED_FORMAT = "unsupported_format"
TRUNCATED = "truncated_image"
CORRUPT = "corrupt_image"
TOO_LARGE = "decompression_bomb"
MISSING = "missing_file"
UNREADABLE = "unreadable_file"

SUPPORTED_FORMATS = {"JPEG": "jpeg", "PNG": "png"}
DEFAULT_MAX_PIXELS = 50_000_000  # ~7000x7000; imager frames are 1-5 megapixels

# Channels as a decoder delivers them for each PIL mode.
_MODE_CHANNELS = {
    "1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1,
    "LA": 2, "La": 2, "P": 3, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
    "RGBA": 4, "RGBa": 4, "CMYK": 4,
}


class BadImage(ValueError):
    """The bytes are not a usable image; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    """What the image itself says about itself."""

    format: str  # "jpeg" or "png"
    height: int
    width: int
    channels: int
    mode: str


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Fully decode ``data`` and return its properties.

    The whole image is decoded (not only the header) so that truncated or corrupt
    files are caught here rather than in the trainer. The pixel limit is checked from
    the header first, before any decoding, so a decompression bomb costs nothing.

    Raises:
        BadImage: with a reason constant and a human-readable detail.
    """
    if not data:
        raise BadImage(EMPTY, "file has zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage(NOT_AN_IMAGE, "content is not a recognised image format") from None
    except Image.DecompressionBombWarning as exc:
        raise BadImage(TOO_LARGE, str(exc)) from None
    except Image.DecompressionBombError as exc:
        raise BadImage(TOO_LARGE, str(exc)) from None
    with image:
        fmt = SUPPORTED_FORMATS.get(image.format or "")
        if fmt is None:
            raise BadImage(UNSUPPORTED_FORMAT, f"{image.format} is not JPEG or PNG")
        width, height = image.size
        if width * height > max_pixels:
            raise BadImage(
                TOO_LARGE, f"declared size {width}x{height} exceeds the {max_pixels}-pixel limit"
            )
        if width < 1 or height < 1:
            raise BadImage(CORRUPT, f"declared size {width}x{height}")
        try:
            image.load()
        except OSError as exc:
            message = str(exc)
            reason = TRUNCATED if "truncated" in message.lower() else CORRUPT
            raise BadImage(reason, message) from None
        except (SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise BadImage(CORRUPT, str(exc)) from None
        mode = image.mode
        channels = _MODE_CHANNELS.get(mode, len(image.getbands()))
        if mode == "P" and "transparency" in image.info:
            channels = 4
        return ImageInfo(format=fmt, height=height, width=width, channels=channels, mode=mode)


def read_and_inspect(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, ImageInfo]:
    """Read a file and inspect it; a missing or unreadable file is a :class:`BadImage`.

    The path may be local or a URL of any file system :mod:`components.filesystem` reads.
    """
    try:
        data = filesystem.read_bytes(path)
    except FileNotFoundError:
        raise BadImage(MISSING, "file does not exist") from None
    except OSError as exc:
        raise BadImage(UNREADABLE, f"{type(exc).__name__}: {exc.strerror or exc}") from None
    return data, inspect_image(data, max_pixels)
