"""``marco explain``: heatmaps for a list of images, written as files and one CSV file.

For each image ``<folders>/<stem>.<ext>`` the output folder gets:

- ``<folders>/<stem>.heatmap.png``: the overlay (:mod:`.overlay`), the size of the
  network's input;
- ``<folders>/<stem>.heatmap.npy``: the heatmap itself, float32 ``[size, size]``
  (:mod:`.smoothgrad`), readable with ``numpy.load``;

where ``<folders>`` are the image's folders below the deepest folder that holds every
image of the run (nothing when they all lie in one folder). One CSV file,
:data:`CSV_NAME`, lists every image: the class explained, the model's probability of
it, the two files (relative to the output folder) and, with ``locate``, the hottest
region in the image file's pixels. An image that cannot be read or decoded gets a row
with the reason in ``error`` and no files; rows with errors come last.

Images are explained one after the other, each in batches of noisy copies: the work is
the network's, and its operations already use every core.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from components import filesystem, imagecheck
from components.names import CLASS_IDS
from components.tools.explain import CSV_NAME, DEFAULT_CLASS, PREDICTED
from components.tools.explain import locate as locating
from components.tools.explain.overlay import overlay_png
from components.tools.explain.smoothgrad import (
    Explanation,
    PixelModel,
    SmoothGrad,
    SmoothGradSettings,
)
from components.tools.scoring.inputs import check_inputs, list_images

OVERLAY_SUFFIX = ".heatmap.png"
ARRAY_SUFFIX = ".heatmap.npy"
COLUMNS = ("path", "class", "probability", "heatmap", "overlay")
LOCATE_COLUMNS = ("x", "y", "radius")
# What an eager TensorFlow error appends to its message: " name: " and the op's name.
_EAGER_NAME = re.compile(r"\s+name:\s*\S*$")


@dataclasses.dataclass(frozen=True)
class ExplainOptions:
    """What ``marco explain`` does besides the images and the model.

    Attributes:
        class_name: the class to explain (one of :data:`components.names.CLASS_NAMES`),
            or :data:`PREDICTED` for each image's predicted class.
        settings: SmoothGrad's sample count, noise, batch size and seed.
        locate: add the hottest region (``x``, ``y``, ``radius``) to the CSV file and
            draw it on the overlay.
        path_column: the path column of CSV manifests (see
            :mod:`components.tools.scoring.inputs`).
        progress: show a progress bar on standard error.
    """

    class_name: str = DEFAULT_CLASS
    settings: SmoothGradSettings = dataclasses.field(default_factory=SmoothGradSettings)
    locate: bool = False
    path_column: str | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.class_name != PREDICTED and self.class_name not in CLASS_IDS:
            raise ValueError(f"unknown class {self.class_name!r}: choose one of "
                             f"{', '.join(CLASS_IDS)} or {PREDICTED!r}")

    @property
    def class_index(self) -> int | None:
        return None if self.class_name == PREDICTED else CLASS_IDS[self.class_name]


@dataclasses.dataclass(frozen=True)
class ExplainRow:
    """One image's line of the CSV file."""

    path: str
    class_name: str = ""
    probability: float | None = None
    heatmap: str = ""
    overlay: str = ""
    region: locating.Region | None = None
    error: str = ""

    def cells(self, locate: bool) -> list[str]:
        cells = [self.path, self.class_name,
                 "" if self.probability is None else f"{self.probability:.6f}",
                 self.heatmap, self.overlay]
        if locate:
            region = self.region
            cells += (["", "", ""] if region is None else
                      [f"{region.x:.1f}", f"{region.y:.1f}", f"{region.radius:.1f}"])
        return [*cells, self.error]


@dataclasses.dataclass(frozen=True)
class ExplainSummary:
    """What :func:`explain_images` did."""

    rows: tuple[ExplainRow, ...]
    csv_path: str
    model_dir: str
    model_version: int | None
    input_size: int
    load_seconds: float
    seconds: float

    @property
    def explained(self) -> int:
        return sum(1 for row in self.rows if not row.error)

    @property
    def errors(self) -> int:
        return len(self.rows) - self.explained


class ImageProblem(ValueError):
    """An image that cannot be explained; the message says why."""


def list_paths(inputs: Sequence[str], path_column: str | None = None) -> list[str]:
    """Every image the inputs name (folders, globs, manifests, files), once, sorted.

    Raises:
        components.tools.scoring.inputs.InputError: naming an input that cannot be used.
    """
    paths: set[str] = set()
    for source in check_inputs(inputs, path_column):
        paths.update(list_images(source))
    return sorted(paths)


def output_stems(paths: Iterable[str]) -> dict[str, str]:
    """Image path -> its outputs' name without suffix, relative to the output folder.

    The name is the file's name without its extension, under the image's folders
    below the deepest folder common to all ``paths``.
    """
    paths = list(paths)
    folders = [filesystem.parent(p).replace(os.sep, "/").rstrip("/").split("/") for p in paths]
    common = 0
    if folders:
        shortest = min(len(f) for f in folders)
        while common < shortest and all(f[common] == folders[0][common] for f in folders):
            common += 1
    stems = {}
    for path, parts in zip(paths, folders, strict=True):
        stem = os.path.splitext(filesystem.name(path))[0]
        stems[path] = "/".join([*parts[common:], stem])
    return stems


def read_image(path: str) -> bytes:
    """The encoded image in ``path``, TIFF handed on as PNG (as ``marco score`` does).

    Raises:
        ImageProblem: for a file that cannot be read, is empty or is a bad TIFF.
    """
    try:
        data = filesystem.read_bytes(path)
        if imagecheck.is_tiff(data):
            data = imagecheck.tiff_to_png(data)
    except OSError as exc:
        raise ImageProblem(f"cannot read the file: {exc.strerror or exc}") from None
    except imagecheck.BadImage as exc:
        raise ImageProblem(f"cannot decode the TIFF image: {exc.detail}") from None
    if not data:
        raise ImageProblem("empty file")
    return data


def write_outputs(explanation: Explanation, out_dir: Path, stem: str,
                  locate: bool) -> tuple[str, str, locating.Region | None]:
    """Writes one image's array and overlay; returns (array, overlay, region in source px)."""
    region = locating.hottest_region(explanation.saliency) if locate else None
    array_name, overlay_name = stem + ARRAY_SUFFIX, stem + OVERLAY_SUFFIX
    (out_dir / stem).parent.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / array_name, explanation.saliency.astype(np.float32), allow_pickle=False)
    (out_dir / overlay_name).write_bytes(
        overlay_png(explanation.image, explanation.saliency, region))
    if region is not None:
        side = explanation.saliency.shape[0]
        region = locating.to_source_pixels(region, side, explanation.source_size)
    return array_name, overlay_name, region


def explain_one(smoothgrad: SmoothGrad, path: str, stem: str, out_dir: Path,
                options: ExplainOptions) -> ExplainRow:
    """One image's row; its files are written to ``out_dir`` unless it has an error."""
    import tensorflow as tf

    from components.tools.serving import describe_error

    try:
        image, source_size = smoothgrad.model.prepare(read_image(path))
    except ImageProblem as exc:
        return ExplainRow(path, error=str(exc))
    except tf.errors.OpError as exc:
        message = _EAGER_NAME.sub("", describe_error(exc))
        return ExplainRow(path, error=f"cannot decode the image: {message}")
    explanation = smoothgrad.explain_prepared(image, options.class_index, source_size)
    heatmap, overlay, region = write_outputs(explanation, out_dir, stem, options.locate)
    return ExplainRow(path, explanation.class_name,
                      float(explanation.probabilities[explanation.class_index]),
                      heatmap, overlay, region)


def write_csv(rows: Sequence[ExplainRow], path: Path, locate: bool) -> None:
    """The CSV file, written whole (a temporary file renamed) or not at all."""
    header = [*COLUMNS, *(LOCATE_COLUMNS if locate else ()), "error"]
    ordered = sorted(rows, key=lambda row: bool(row.error))  # stable: errors last
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
    try:
        with open(descriptor, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in ordered:
                writer.writerow(row.cells(locate))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def explain_paths(paths: Sequence[str], smoothgrad: SmoothGrad, out_dir: str | Path,
                  options: ExplainOptions) -> tuple[ExplainRow, ...]:
    """Heatmaps of ``paths`` with a loaded model; writes their files and the CSV file.

    Returns the rows in the order of ``paths``.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stems = output_stems(paths)
    owners: dict[str, str] = {}
    rows = []
    for path in tqdm(paths, desc="heatmaps", unit="image", disable=not options.progress):
        stem = stems[path]
        if stem in owners:
            rows.append(ExplainRow(path, error=f"{owners[stem]} already has the output name "
                                               f"{stem}{OVERLAY_SUFFIX}; explain it separately"))
            continue
        owners[stem] = path
        rows.append(explain_one(smoothgrad, path, stem, out, options))
    write_csv(rows, out / CSV_NAME, options.locate)
    return tuple(rows)


def explain_images(inputs: Sequence[str], model: str, out_dir: str | Path,
                   options: ExplainOptions | None = None) -> ExplainSummary:
    """Heatmaps of every image the inputs name, with the model in ``model``.

    Args:
        inputs: folders, globs, manifests or image files (as ``marco score`` takes).
        model: a serving folder (its highest version is used) or a SavedModel folder.
        out_dir: the folder to write into (created; files of the same names replaced).
        options: see :class:`ExplainOptions`.

    Raises:
        components.tools.scoring.inputs.InputError: an input that does not exist, or
            no images at all.
        components.tools.scoring.model.ModelNotFound: no SavedModel at ``model``.
        ValueError: a SavedModel without the network's call function.
    """
    from components.tools.scoring.inputs import InputError
    from components.tools.scoring.model import resolve_model

    options = options or ExplainOptions()
    paths = list_paths(inputs, options.path_column)
    if not paths:
        raise InputError("no images found in " + ", ".join(inputs))
    version = resolve_model(model)
    started = time.perf_counter()
    network = PixelModel.from_saved_model(version.path)
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rows = explain_paths(paths, SmoothGrad(network, options.settings), out_dir, options)
    seconds = time.perf_counter() - started
    return ExplainSummary(rows, str(Path(out_dir) / CSV_NAME), version.path, version.version,
                          network.input_size, load_seconds, seconds)
