"""Image formats, and the checks that a file really is a usable image.

The formats the project knows are defined here once (:data:`EXAMPLE_FORMATS`,
:data:`SCORING_FORMATS` and the file name endings of each), for the catalogue, the
layout readers, the schema, the synthetic data, ``marco sources add`` and scoring.

The checks are shared by ``marco sources validate`` and ingestion so that both
quarantine the same files for the same reasons. Height, width, channels and format
always come from the decoded image, never from the file name.

Ingestion stores each image's bytes as read, so it accepts only the formats of the
example format (JPEG and PNG) and refuses the others as :data:`UNSUPPORTED_FORMAT`;
TIFF, GIF and BMP images are converted to PNG before ingestion, never by it. Scoring
reads TIFF too: :func:`tiff_to_png` turns it into the PNG the model decodes.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
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

DEFAULT_MAX_PIXELS = 50_000_000  # ~7000x7000; imager frames are 1-5 megapixels


@dataclass(frozen=True)
class ImageFormat:
    """One image format and how the project names it.

    Attributes:
        name: lower case; the ``image_format`` feature's value and the catalogue's
            ``imaging.formats`` entry.
        pil_name: what Pillow's ``Image.format`` says for it.
        extensions: file name endings, lower case, without the dot; the first is the
            one files are written with.
    """

    name: str
    pil_name: str
    extensions: tuple[str, ...]


JPEG = ImageFormat("jpeg", "JPEG", ("jpg", "jpeg"))
PNG = ImageFormat("png", "PNG", ("png",))
GIF = ImageFormat("gif", "GIF", ("gif",))
BMP = ImageFormat("bmp", "BMP", ("bmp",))
TIFF = ImageFormat("tiff", "TIFF", ("tif", "tiff"))
WEBP = ImageFormat("webp", "WEBP", ("webp",))

# What the example format stores (``image_bytes``, as read) and so what ingestion accepts.
EXAMPLE_FORMATS: tuple[ImageFormat, ...] = (JPEG, PNG)
# What ``tf.io.decode_image``, and so the model's serving signatures, decode.
TENSORFLOW_FORMATS: tuple[ImageFormat, ...] = (JPEG, PNG, GIF, BMP)
# What ``marco score`` reads: TensorFlow's formats, and TIFF through :func:`tiff_to_png`.
SCORING_FORMATS: tuple[ImageFormat, ...] = (*TENSORFLOW_FORMATS, TIFF)
# Every format recognised by its file name ending.
KNOWN_FORMATS: tuple[ImageFormat, ...] = (*SCORING_FORMATS, WEBP)


def format_names(formats: Iterable[ImageFormat]) -> tuple[str, ...]:
    """The lower-case names of ``formats`` (``("jpeg", "png")``)."""
    return tuple(f.name for f in formats)


def extensions(formats: Iterable[ImageFormat]) -> tuple[str, ...]:
    """Every file name ending of ``formats``, lower case, without the dot."""
    return tuple(ext for f in formats for ext in f.extensions)


def _spelled(formats: Iterable[ImageFormat]) -> str:
    return " or ".join(f.pil_name for f in formats)


# Pillow's format name -> the example format's name, for the formats ingestion accepts.
SUPPORTED_FORMATS = {f.pil_name: f.name for f in EXAMPLE_FORMATS}


class BadImage(ValueError):
    """The bytes are not a usable image; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    """What the image itself says about itself."""

    format: str  # a name of EXAMPLE_FORMATS: "jpeg" or "png"
    height: int
    width: int
    channels: int
    mode: str


# Channels as a decoder delivers them for each PIL mode.
_MODE_CHANNELS = {
    "1": 1, "L": 1, "I": 1, "I;16": 1, "I;16B": 1, "I;16L": 1, "F": 1,
    "LA": 2, "La": 2, "P": 3, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
    "RGBA": 4, "RGBa": 4, "CMYK": 4,
}
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_INGESTION_ADVICE = ": examples store the image bytes as read; convert the image to PNG first"
# The first bytes of a TIFF and of a BigTIFF file, little- and big-endian.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@contextmanager
def _decoded(
    data: bytes, max_pixels: int, formats: tuple[ImageFormat, ...], advice: str = ""
) -> Iterator[tuple[Image.Image, ImageFormat]]:
    """The fully decoded image of ``data``, which must be in one of ``formats``.

    The whole image is decoded (not only the header) so that truncated or corrupt
    files are caught here rather than later. The pixel limit is checked from the
    header first, before any decoding, so a decompression bomb costs nothing.

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
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(TOO_LARGE, str(exc)) from None
    with image:
        fmt = next((f for f in formats if f.pil_name == image.format), None)
        if fmt is None:
            raise BadImage(
                UNSUPPORTED_FORMAT, f"{image.format} is not {_spelled(formats)}{advice}"
            )
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
        yield image, fmt


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Fully decode ``data`` as an image ingestion accepts and return its properties.

    Raises:
        BadImage: with a reason constant and a human-readable detail; a format other
            than :data:`EXAMPLE_FORMATS` is :data:`UNSUPPORTED_FORMAT`.
    """
    with _decoded(data, max_pixels, EXAMPLE_FORMATS, _INGESTION_ADVICE) as (image, fmt):
        mode = image.mode
        channels = _MODE_CHANNELS.get(mode, len(image.getbands()))
        if mode == "P" and "transparency" in image.info:
            channels = 4
        return ImageInfo(format=fmt.name, height=image.height, width=image.width,
                         channels=channels, mode=mode)


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


def is_tiff(data: bytes) -> bool:
    """Whether ``data`` begins as a TIFF (or BigTIFF) file does, in either byte order."""
    return data[:4] in _TIFF_MAGIC


def tiff_to_png(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """Decode a TIFF image (its first page) and encode its pixels as an 8-bit PNG.

    16-bit greyscale, as many imagers write it, is brought to 8 bits by scaling the
    full 16-bit range onto 0-255 (value / 257, rounded): 0 stays black, 65535 becomes
    255, and an image that uses only part of the range keeps its brightness, as the
    model sees a 16-bit PNG. Other greyscale images stay greyscale; the rest become
    RGB (an alpha channel is dropped, as TensorFlow's decoders drop it).

    Raises:
        BadImage: for an empty, corrupt, truncated or oversized image, one that is not
            a TIFF, or 32-bit samples (integer or floating point), which have no
            agreed scale.
    """
    with _decoded(data, max_pixels, (TIFF,)) as (image, _):
        if image.mode in _SIXTEEN_BIT_MODES:
            sixteen = np.asarray(image).astype(np.float64)
            image = Image.fromarray(np.rint(sixteen / 257.0).astype(np.uint8))
        elif image.mode in ("I", "F"):
            raise BadImage(
                UNSUPPORTED_FORMAT,
                f"TIFF with 32-bit samples (mode {image.mode}); 1-, 8- and 16-bit ones are read",
            )
        elif image.mode != "L":
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format=PNG.pil_name, compress_level=1)
        return buffer.getvalue()
