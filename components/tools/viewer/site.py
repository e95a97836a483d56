"""Writes the plate viewer: a static site that opens from disk, with no server.

Layout of the site folder::

    index.html    the page (plain HTML)
    viewer.css    its style
    viewer.js     plain JavaScript that renders data.js
    data.js       window.MARCO_VIEWER_DATA = {...}: plates, drops, images
    thumbs/       one small JPEG per image (thumbnails.py)
    heatmaps/     overlay images, for rows that name one

The data is a script rather than a JSON file because a page opened from ``file://``
may not fetch files. Its format (``format`` 1):

- ``plates``: ``name``, ``format`` (96, 384, 1536), ``rows``, ``columns``,
  ``row_names`` and the ``institutions`` of its images;
- ``series`` (drops): ``plate`` (index, -1 for images without a plate and well),
  ``well``, ``row``, ``column``, ``drop`` and ``images`` (indices, in time order);
- ``images``: ``path``, ``class`` (empty if not scored), ``probabilities`` (in
  ``classes`` order, or null), ``crystals``, ``imaged_at``, ``institution``,
  ``thumb`` (relative URL or empty), ``error``, ``series``, and ``heatmap`` (relative
  URL) when the image has an overlay.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import html
import json
import os
import shutil
import time
from collections.abc import Mapping
from importlib import resources

from components import filesystem
from components.names import CLASS_IDS, CLASS_NAMES
from components.tools.scoring.results import DEFAULT_HITS_THRESHOLD, DEFAULT_IMAGED_AT_PATTERN
from components.tools.viewer.data import (
    PathFields,
    ResultsError,
    attach_overlays,
    lay_out,
    read_overlays,
    read_results,
    row_letters,
)
from components.tools.viewer.thumbnails import DEFAULT_THUMB_SIZE, write_thumbnails

DATA_VARIABLE = "MARCO_VIEWER_DATA"
DATA_FORMAT = 1
ASSETS = ("viewer.css", "viewer.js")
THUMBS = "thumbs"
HEATMAPS = "heatmaps"


@dataclasses.dataclass(frozen=True)
class ViewerOptions:
    """How the site is built.

    Attributes:
        threshold: the crystal probability the page starts with (the hits threshold).
        plate_format: 96, 384 or 1536 for every plate; None reads it from the wells.
        imaged_at_pattern: reads the imaging time from paths whose row has none.
        institution_pattern, drop_pattern: read those from paths (groups of that name).
        heatmaps: a heatmaps CSV file (``marco explain``'s), whose overlays are shown
            over the images they belong to.
        thumb_size: longer side of the thumbnails, in pixels.
        workers: processes writing thumbnails (default: all cores).
        title: the page's title.
        progress: show a progress bar.
    """

    threshold: float = DEFAULT_HITS_THRESHOLD
    plate_format: int | None = None
    imaged_at_pattern: str | None = DEFAULT_IMAGED_AT_PATTERN
    institution_pattern: str | None = None
    drop_pattern: str | None = None
    heatmaps: str | None = None
    thumb_size: int = DEFAULT_THUMB_SIZE
    workers: int | None = None
    title: str = "MARCO plate viewer"
    progress: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 16 <= self.thumb_size <= 1024:
            raise ValueError(f"thumbnail size must be 16 to 1024 pixels, got {self.thumb_size}")


@dataclasses.dataclass
class SiteSummary:
    """What :func:`build_site` wrote."""

    index: str
    images: int
    plates: int
    drops: int
    dated: int
    heatmaps: int
    thumbnails_written: int
    thumbnails_reused: int
    thumbnail_errors: list[str]
    bytes: int
    seconds: float


def _asset(name: str) -> bytes:
    return resources.files("components.tools.viewer").joinpath("static", name).read_bytes()


def write_assets(out_dir: str, title: str) -> None:
    """The page, its style and its script, for a site in ``out_dir``."""
    page = _asset("index.html").decode("utf-8").replace("{title}", html.escape(title))
    _write_text(os.path.join(out_dir, "index.html"), page)
    for name in ASSETS:
        _write_text(os.path.join(out_dir, name), _asset(name).decode("utf-8"))


def write_data(out_dir: str, data: Mapping, variable: str = DATA_VARIABLE,
               name: str = "data.js") -> str:
    """``window.<variable> = <data as JSON>;`` in ``out_dir/name``: data for a page on disk."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    path = os.path.join(out_dir, name)
    _write_text(path, f"window.{variable} = {text};\n")
    return path


def _write_text(path: str, text: str) -> None:
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def _copy_heatmaps(paths: list[str], out_dir: str, base: str) -> dict[str, str]:
    """Copies each overlay into ``heatmaps/``; returns path -> URL relative to the site."""
    folder = os.path.join(out_dir, HEATMAPS)
    urls = {}
    for path in dict.fromkeys(p for p in paths if p):
        source = path if filesystem.is_absolute(path) else filesystem.join(base, path)
        ext = os.path.splitext(path)[1].lower() or ".png"
        name = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:20] + ext
        os.makedirs(folder, exist_ok=True)
        try:
            data = filesystem.read_bytes(source)
        except OSError as exc:
            raise ResultsError(f"heatmap {path}: cannot be read: {exc}") from None
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(data)
        urls[path] = f"{HEATMAPS}/{name}"
    return urls


def folder_bytes(folder: str) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            total += os.path.getsize(os.path.join(dirpath, name))
    return total


def build_site(csv_path: str, out_dir: str, options: ViewerOptions | None = None) -> SiteSummary:
    """Writes the plate viewer of the results file ``csv_path`` into ``out_dir``.

    Thumbnails already in ``out_dir`` from an earlier build of the same images are
    kept; the page and its data are replaced.

    Raises:
        ResultsError: for a results file the viewer cannot show (naming file, row and
            field), a well that does not fit its plate, or an unreadable heatmap.
        ValueError: for a bad pattern or option.
    """
    options = options or ViewerOptions()
    started = time.perf_counter()
    fields = PathFields(options.institution_pattern, options.drop_pattern)
    images = read_results(csv_path, imaged_at_pattern=options.imaged_at_pattern,
                          fields=fields)
    if options.heatmaps:
        attach_overlays(images, read_overlays(options.heatmaps))
    layout = lay_out(images, options.plate_format, source=csv_path)
    if os.path.isfile(out_dir):
        raise ValueError(f"{out_dir}: is a file; give a folder for the site")
    os.makedirs(out_dir, exist_ok=True)
    scored = [i for i, image in enumerate(images) if image.probabilities is not None]
    thumbs = write_thumbnails([images[i].path for i in scored],
                              os.path.join(out_dir, THUMBS), options.thumb_size,
                              workers=options.workers, progress=options.progress)
    thumb_of = {}
    errors = []
    for position, index in enumerate(scored):
        if thumbs.errors[position]:
            errors.append(f"{images[index].path}: {thumbs.errors[position]}")
        else:
            thumb_of[index] = f"{THUMBS}/{thumbs.names[position]}"
    heatmap_dir = os.path.join(out_dir, HEATMAPS)
    if os.path.isdir(heatmap_dir):
        shutil.rmtree(heatmap_dir)
    heatmaps = _copy_heatmaps([image.heatmap for image in images], out_dir,
                              filesystem.parent(os.path.abspath(csv_path)))

    institutions: list[set[str]] = [set() for _ in layout.plates]
    for index, image in enumerate(images):
        plate = layout.series[layout.series_of[index]].plate
        if plate >= 0 and image.institution:
            institutions[plate].add(image.institution)
    data = {
        "format": DATA_FORMAT,
        "title": options.title,
        "source": os.path.abspath(csv_path) if not filesystem.is_remote(csv_path) else csv_path,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "threshold": options.threshold,
        "classes": list(CLASS_NAMES),
        "thumb_size": options.thumb_size,
        "plates": [
            {"name": plate.name, "format": plate.format, "rows": plate.rows,
             "columns": plate.columns,
             "row_names": [row_letters(r) for r in range(plate.rows)],
             "institutions": sorted(institutions[p])}
            for p, plate in enumerate(layout.plates)
        ],
        "series": [
            {"plate": s.plate, "well": s.well, "row": s.row, "column": s.column,
             "drop": s.drop, "images": s.images}
            for s in layout.series
        ],
        "images": [_image_record(index, image, layout.series_of[index], thumb_of, heatmaps)
                   for index, image in enumerate(images)],
    }
    write_data(out_dir, data)
    write_assets(out_dir, options.title)
    return SiteSummary(
        index=os.path.join(os.path.abspath(out_dir), "index.html"),
        images=len(images),
        plates=len(layout.plates),
        drops=len(layout.series),
        dated=sum(1 for image in images if image.imaged_at),
        heatmaps=sum(1 for image in images if image.heatmap),
        thumbnails_written=thumbs.written,
        thumbnails_reused=thumbs.reused,
        thumbnail_errors=errors,
        bytes=folder_bytes(out_dir),
        seconds=time.perf_counter() - started,
    )


def _image_record(index: int, image, series: int, thumb_of: Mapping[int, str],
                  heatmaps: Mapping[str, str]) -> dict:
    probabilities = (None if image.probabilities is None
                     else [round(p, 4) for p in image.probabilities])
    record = {
        "path": image.path,
        "class": image.predicted_class,
        "probabilities": probabilities,
        "crystals": None if probabilities is None else probabilities[CLASS_IDS["crystals"]],
        "imaged_at": image.imaged_at,
        "institution": image.institution,
        "thumb": thumb_of.get(index, ""),
        "error": image.error,
        "series": series,
    }
    if image.heatmap:
        record["heatmap"] = heatmaps[image.heatmap]
    return record
