"""Writes the review page: a static site in the plate viewer's style, opened from disk.

Layout of the site folder::

    index.html    the review page
    review.js     renders data.js, takes the expert's keys, downloads the decisions
    review.css    its own style, on top of the viewer's
    viewer.css, viewer.js   the plate viewer's style and helpers (window.MarcoViewer)
    data.js       window.MARCO_REVIEW_DATA = {...}
    images/       each image as stored (``<n>.<format>``) and a JPEG to show (``<n>.jpg``)
    heatmaps/     overlays, when heatmaps were given or made

The data (``format`` 1): ``classes`` (MARCO's, in id order), ``dispute`` (the class
written for "dispute / unsure"), ``columns`` (the overrides file's header), ``key``
(where the page keeps decisions in the browser between visits) and ``items``, the
images to review, highest cross-entropy first, each with ``institution``,
``image_id``, ``old_label`` (the native label), ``label`` (the stored class),
``label_source``, ``split``, ``probabilities`` (in ``classes`` order), ``predicted``,
``cross_entropy``, ``image``, ``original``, ``heatmap`` (relative URLs, ``heatmap``
empty when none) and ``source_path``.

The page downloads one overrides file per institution, ``<CODE>.csv``, in the format
:func:`components.catalogue.load_overrides` reads: a decision that keeps the stored
class is not an override and is not written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import os
import shutil
import time
from importlib import resources

import numpy as np

from components import imagecheck
from components.catalogue import DISPUTE, OVERRIDE_COLUMNS, Catalogue
from components.names import CLASS_NAMES
from components.tools.review import DATA_FORMAT, DATA_VARIABLE, DEFAULT_FRACTION
from components.tools.review.examples import image_bytes, score_examples
from components.tools.review.selection import cross_entropy, select
from components.tools.viewer.site import folder_bytes, write_assets, write_data
from components.tools.viewer.thumbnails import make_thumbnail

IMAGES = "images"
HEATMAPS = "heatmaps"
DISPLAY_SIZE = 512
ASSETS = ("review.js", "review.css")


@dataclasses.dataclass(frozen=True)
class ReviewOptions:
    """How the review is chosen and shown.

    Attributes:
        fraction: the share of labelled images to review, those with the highest
            cross-entropy on their stored label.
        heatmaps: a heatmaps CSV file (``marco explain``'s) whose overlays are shown
            over the images they belong to (matched by the image's source path).
        explain: make a SmoothGrad heatmap of each reviewed image's predicted class.
        title: the page's title.
        batch_size: images per call of the model.
    """

    fraction: float = DEFAULT_FRACTION
    heatmaps: str | None = None
    explain: bool = False
    title: str = "MARCO label review"
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")


@dataclasses.dataclass
class ReviewSummary:
    """What :func:`build_review` chose and wrote."""

    index: str
    considered: int
    selected: int
    skipped: dict[str, int]
    heatmaps: int
    min_cross_entropy: float
    bytes: int
    seconds: float


def _asset(name: str) -> str:
    return resources.files("components.tools.review").joinpath("static", name).read_text(
        encoding="utf-8")


def _write(path: str, text: str) -> None:
    partial = f"{path}.partial"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def build_review(examples_uri: str, model: str, catalogue: Catalogue, out_dir: str,
                 options: ReviewOptions | None = None) -> ReviewSummary:
    """Score every labelled example, choose the most disputed and write the page.

    Args:
        examples_uri: an ingested Examples folder (``Split-*/data_tfrecord-*.gz``).
        model: a serving folder (its newest version) or a SavedModel folder.
        catalogue: gives the stored class of each native label.
        out_dir: the site folder (created; files of the same names replaced).
        options: see :class:`ReviewOptions`.
    """
    from components.tools.scoring.model import load_scorer, resolve_model

    options = options or ReviewOptions()
    started = time.perf_counter()
    version = resolve_model(model)
    scorer = load_scorer(version.path)
    images, probabilities, skipped = score_examples(
        examples_uri, catalogue, scorer.score, options.batch_size)
    labels = np.array([image.label for image in images], dtype=np.int64)
    losses = cross_entropy(probabilities, labels)
    chosen = select(losses, [f"{i.institution}/{i.image_id}" for i in images], options.fraction)
    picked = [images[i] for i in chosen]

    os.makedirs(os.path.join(out_dir, IMAGES), exist_ok=True)
    originals, shown = [], []
    for n, data in enumerate(image_bytes(picked)):
        info = imagecheck.inspect_image(data)
        original = f"{IMAGES}/{n}.{info.format}"
        with open(os.path.join(out_dir, original), "wb") as handle:
            handle.write(data)
        display = f"{IMAGES}/{n}.jpg"  # the stored formats are jpeg and png
        make_thumbnail(os.path.join(out_dir, original), os.path.join(out_dir, display),
                       DISPLAY_SIZE)
        originals.append(original)
        shown.append(display)
    heatmaps = _heatmaps(picked, originals, version.path, out_dir, options)

    items = []
    for n, index in enumerate(chosen):
        image = images[index]
        items.append({
            "institution": image.institution,
            "image_id": image.image_id,
            "old_label": image.native_label,
            "label": CLASS_NAMES[image.label],
            "label_source": image.label_source,
            "split": image.split,
            "probabilities": [round(float(p), 4) for p in probabilities[index]],
            "predicted": CLASS_NAMES[int(np.argmax(probabilities[index]))],
            "cross_entropy": round(float(losses[index]), 4),
            "image": shown[n],
            "original": originals[n],
            "heatmap": heatmaps.get(n, ""),
            "source_path": image.source_path,
        })
    key = hashlib.sha1(f"{examples_uri}\0{version.path}".encode()).hexdigest()[:16]
    data = {
        "format": DATA_FORMAT,
        "title": options.title,
        "examples": examples_uri,
        "model": version.path,
        "model_version": version.version,
        "fraction": options.fraction,
        "considered": len(images),
        "skipped": skipped,
        "classes": list(CLASS_NAMES),
        "dispute": DISPUTE,
        "columns": list(OVERRIDE_COLUMNS),
        "key": f"marco-review-{key}",
        "items": items,
    }
    write_assets(out_dir, options.title)
    page = _asset("index.html").replace("{title}", html.escape(options.title))
    _write(os.path.join(out_dir, "index.html"), page)
    for name in ASSETS:
        _write(os.path.join(out_dir, name), _asset(name))
    write_data(out_dir, data, variable=DATA_VARIABLE)
    return ReviewSummary(
        index=os.path.join(os.path.abspath(out_dir), "index.html"),
        considered=len(images), selected=len(items), skipped=skipped,
        heatmaps=len(heatmaps),
        min_cross_entropy=float(losses[chosen[-1]]) if chosen else 0.0,
        bytes=folder_bytes(out_dir), seconds=time.perf_counter() - started,
    )


def _heatmaps(picked, originals: list[str], model_dir: str, out_dir: str,
              options: ReviewOptions) -> dict[int, str]:
    """Item number -> overlay URL, from a heatmaps file or made here."""
    found: dict[int, str] = {}
    if not (options.heatmaps or options.explain):
        return found
    os.makedirs(os.path.join(out_dir, HEATMAPS), exist_ok=True)
    if options.heatmaps:
        from components.tools.viewer.data import _key as overlay_key
        from components.tools.viewer.data import read_overlays

        overlays = read_overlays(options.heatmaps)
        for n, image in enumerate(picked):
            overlay = overlays.get(overlay_key(image.source_path))
            if overlay and os.path.isfile(overlay):
                target = f"{HEATMAPS}/{n}.png"
                shutil.copyfile(overlay, os.path.join(out_dir, target))
                found[n] = target
    missing = [n for n in range(len(picked)) if n not in found]
    if options.explain and missing:
        from components.tools.explain import PREDICTED
        from components.tools.explain.run import ExplainOptions, explain_paths
        from components.tools.explain.smoothgrad import PixelModel, SmoothGrad

        work = os.path.join(out_dir, HEATMAPS, "made")
        paths = [os.path.join(out_dir, originals[n]) for n in missing]
        rows = explain_paths(paths, SmoothGrad(PixelModel.from_saved_model(model_dir)), work,
                             ExplainOptions(class_name=PREDICTED))
        for n, row in zip(missing, rows, strict=True):
            if row.overlay:
                target = f"{HEATMAPS}/{n}.png"
                shutil.move(os.path.join(work, row.overlay), os.path.join(out_dir, target))
                found[n] = target
        shutil.rmtree(work, ignore_errors=True)
    return found
