"""Small JPEG thumbnails of drop images, written once and in parallel.

A thumbnail's file name is a digest of the image's path, size, modification time and
the thumbnail size, so a site rebuilt into the same folder reuses the thumbnails of
unchanged images and never shows a stale one. JPEGs are decoded at reduced scale
(libjpeg's DCT scaling, Pillow's ``draft``), which makes a thumbnail of a
full-size drop image cost a few milliseconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

from components import filesystem

DEFAULT_THUMB_SIZE = 128
JPEG_QUALITY = 80


def thumbnail_name(path: str, size: int) -> str:
    """``<digest>.jpg`` for the image as it is now (its size and modification time)."""
    try:
        length, mtime = filesystem.stat(path)
    except OSError:
        length, mtime = -1, -1
    key = f"{path}\0{length}\0{mtime}\0{size}".encode("utf-8", "surrogateescape")
    return hashlib.sha1(key).hexdigest()[:20] + ".jpg"


def _to_8bit(image: Image.Image) -> Image.Image:
    """RGB or L with 8-bit samples; 16-bit greyscale scaled as the model reads it."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        scaled = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        pixels = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "L")
    if image.mode in ("L", "RGB"):
        return image
    return image.convert("RGB")


def make_thumbnail(source: str, target: str, size: int = DEFAULT_THUMB_SIZE) -> None:
    """Writes a JPEG of ``source`` whose longer side is at most ``size`` pixels.

    Raises:
        OSError: when the image cannot be read or decoded (Pillow's errors included).
    """
    data = filesystem.read_bytes(source)
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            image.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
            small = _to_8bit(ImageOps.exif_transpose(image))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise OSError(f"cannot decode the image: {exc}") from None
    partial = f"{target}.partial"
    small.save(partial, "JPEG", quality=JPEG_QUALITY)
    os.replace(partial, target)


def _job(job: tuple[int, str, str, int]) -> tuple[int, str]:
    index, source, target, size = job
    try:
        make_thumbnail(source, target, size)
    except OSError as exc:
        return index, str(exc)
    return index, ""


@dataclasses.dataclass
class ThumbnailResult:
    """What :func:`write_thumbnails` did; ``errors[i]`` is empty when image i has one."""

    names: list[str]
    errors: list[str]
    written: int = 0
    reused: int = 0


def _run(jobs: list[tuple[int, str, str, int]], workers: int) -> Iterator[tuple[int, str]]:
    if workers <= 1 or len(jobs) < 64:
        for job in jobs:
            yield _job(job)
        return
    # Forking after TensorFlow has started its threads (marco score --html) is unsafe.
    method = "spawn" if "tensorflow" in sys.modules else "fork"
    context = multiprocessing.get_context(method)
    chunk = max(1, min(64, len(jobs) // (workers * 8)))
    with context.Pool(workers) as pool:
        yield from pool.imap_unordered(_job, jobs, chunksize=chunk)


def write_thumbnails(
    paths: Sequence[str],
    folder: str,
    size: int = DEFAULT_THUMB_SIZE,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> ThumbnailResult:
    """Thumbnails of ``paths`` in ``folder``; existing ones (same image) are kept.

    Files in ``folder`` that belong to none of ``paths`` (images no longer in the
    results) are removed, so a rebuilt site holds only what it shows. An image that
    cannot be read gets an error instead of a thumbnail.
    """
    from tqdm import tqdm

    os.makedirs(folder, exist_ok=True)
    names = [thumbnail_name(path, size) for path in paths]
    errors = [""] * len(paths)
    wanted = set(names)
    present = set()
    for entry in os.listdir(folder):
        if entry in wanted:
            present.add(entry)
        else:
            os.remove(os.path.join(folder, entry))
    jobs, queued = [], set()
    for index, (path, name) in enumerate(zip(paths, names, strict=True)):
        if name not in present and name not in queued:
            queued.add(name)
            jobs.append((index, path, os.path.join(folder, name), size))
    result = ThumbnailResult(names, errors, reused=len(paths) - len(jobs))
    workers = workers or os.cpu_count() or 1
    with tqdm(total=len(jobs), unit="img", desc="thumbnails", disable=not progress,
              dynamic_ncols=True, mininterval=0.5) as bar:
        for index, error in _run(jobs, workers):
            if error:
                errors[index] = error
            else:
                result.written += 1
            bar.update()
    by_name = {names[i]: errors[i] for i in range(len(paths)) if errors[i]}
    for index, name in enumerate(names):  # a path listed twice shares its thumbnail
        if name in by_name:
            errors[index] = by_name[name]
    return result
