"""What the plate viewer shows, read from a results CSV file: images, drops and plates.

A results file (``marco score``'s, :data:`components.tools.scoring.results.COLUMNS`)
gives one row per image. The viewer groups them:

- **plates**, in their real geometry (:data:`PLATE_FORMATS`): the smallest standard
  plate that holds every well named for the plate, or the format given;
- **drops** (series): the images of one plate, well and drop, in imaging-time order,
  which is the drop's time course. A drop is ``1`` unless a ``drop`` column or the
  drop pattern says otherwise. Images without a plate and well are drops of their own.

Columns beyond ``marco score``'s are read when present: ``institution``, ``drop`` and
``heatmap`` (an overlay image for the drop, shown over it). ``imaged_at`` is taken
from the file, else from the path with the imaging-time pattern; ``institution`` and
``drop`` can also come from the path (:class:`PathFields`); heatmaps also from the CSV
file ``marco explain`` writes (:func:`read_overlays`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from collections.abc import Iterable

from components import filesystem
from components.names import CLASS_IDS, CLASS_NAMES
from components.tools.scoring.results import (
    DEFAULT_IMAGED_AT_PATTERN,
    ImagedAtParser,
    normalise_imaged_at,
)

# Plate format (number of wells) -> (rows, columns); rows are lettered A, B, ... Z,
# AA, AB ... AF, columns numbered from 1.
PLATE_FORMATS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}
REQUIRED_COLUMNS = ("path", *CLASS_NAMES)
_LETTER_WELL = re.compile(r"^([A-Za-z]{1,2})0*([0-9]{1,2})$")
_NUMBER_WELL = re.compile(r"^0*([0-9]{1,4})$")


class ResultsError(ValueError):
    """A results file the viewer cannot show; the message names the file, row and field."""


def row_letters(index: int) -> str:
    """0 -> ``A``, 25 -> ``Z``, 26 -> ``AA``: a plate row's letters."""
    if index < 26:
        return chr(ord("A") + index)
    return chr(ord("A") + index // 26 - 1) + chr(ord("A") + index % 26)


def _row_index(letters: str) -> int:
    letters = letters.upper()
    if len(letters) == 1:
        return ord(letters) - ord("A")
    return (ord(letters[0]) - ord("A") + 1) * 26 + ord(letters[1]) - ord("A")


@dataclasses.dataclass(frozen=True)
class Well:
    """A well's place: a row and column index from 0, or a number counted row by row."""

    name: str
    row: int | None = None
    column: int | None = None
    number: int | None = None

    def place(self, columns: int) -> tuple[int, int]:
        if self.number is not None:
            return divmod(self.number - 1, columns)
        return self.row, self.column

    def fits(self, plate_format: int) -> bool:
        rows, columns = PLATE_FORMATS[plate_format]
        if self.number is not None:
            return self.number <= rows * columns
        return self.row < rows and self.column < columns


def parse_well(name: str) -> Well | None:
    """``A01``, ``a1``, ``AF48`` (row letters and column) or ``0042`` (a number from 1)."""
    text = name.strip()
    match = _LETTER_WELL.match(text)
    if match is not None and int(match.group(2)) >= 1:
        return Well(text, row=_row_index(match.group(1)), column=int(match.group(2)) - 1)
    match = _NUMBER_WELL.match(text)
    if match is not None and int(match.group(1)) >= 1:
        return Well(text, number=int(match.group(1)))
    return None


def plate_format_for(wells: Iterable[Well], plate: str, given: int | None = None) -> int:
    """The plate's format: ``given``, else the smallest of :data:`PLATE_FORMATS` that fits.

    Raises:
        ResultsError: naming the plate and a well that does not fit.
    """
    wells = list(wells)
    if given is not None:
        if given not in PLATE_FORMATS:
            raise ResultsError(f"plate format {given}: not one of "
                               f"{', '.join(map(str, PLATE_FORMATS))}")
        for well in wells:
            if not well.fits(given):
                raise ResultsError(f"plate {plate}: well {well.name} does not fit a "
                                   f"{given}-well plate")
        return given
    for size in PLATE_FORMATS:
        if all(well.fits(size) for well in wells):
            return size
    largest = max(PLATE_FORMATS)
    bad = next(w for w in wells if not w.fits(largest))
    raise ResultsError(f"plate {plate}: well {bad.name} does not fit a {largest}-well plate")


class PathFields:
    """Reads the ``institution`` and ``drop`` of an image from its path, when asked.

    Each pattern is a regular expression searched in the path (``/`` separators) with a
    group of that name; None reads nothing.

    Raises:
        ValueError: for a pattern that does not compile or lacks its group.
    """

    def __init__(self, institution_pattern: str | None = None,
                 drop_pattern: str | None = None) -> None:
        self._regexes = {}
        for field, pattern in (("institution", institution_pattern), ("drop", drop_pattern)):
            if not pattern:
                continue
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{field} pattern {pattern!r} is not a valid regular "
                                 f"expression: {exc}") from None
            if field not in regex.groupindex:
                raise ValueError(f"{field} pattern {pattern!r} has no (?P<{field}>...) group")
            self._regexes[field] = regex

    def parse(self, path: str, field: str) -> str:
        regex = self._regexes.get(field)
        if regex is None:
            return ""
        match = regex.search(path.replace(os.sep, "/"))
        return (match.group(field) or "") if match else ""


@dataclasses.dataclass
class Image:
    """One row of the results file, as the viewer uses it."""

    path: str
    probabilities: tuple[float, ...] | None
    plate: str = ""
    well: str = ""
    drop: str = ""
    imaged_at: str = ""
    institution: str = ""
    heatmap: str = ""
    error: str = ""

    @property
    def predicted_class(self) -> str:
        if self.probabilities is None:
            return ""
        best = max(range(len(CLASS_NAMES)), key=lambda i: self.probabilities[i])
        return CLASS_NAMES[best]

    @property
    def crystals(self) -> float | None:
        return None if self.probabilities is None else self.probabilities[CLASS_IDS["crystals"]]


def _probability(text: str, source: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ResultsError(f"{source}, column {column!r}: {text!r} is not a "
                           "probability") from None
    if not 0.0 <= value <= 1.0:
        raise ResultsError(f"{source}, column {column!r}: {text} is outside [0, 1]")
    return value


def read_results(
    csv_path: str,
    *,
    imaged_at_pattern: str | None = DEFAULT_IMAGED_AT_PATTERN,
    fields: PathFields | None = None,
) -> list[Image]:
    """The images of a results file, in its order.

    Args:
        csv_path: a CSV file with at least the columns ``path``, ``clear``,
            ``crystals``, ``other`` and ``precipitate``.
        imaged_at_pattern: reads the imaging time from paths whose row has none
            (:class:`~components.tools.scoring.results.ImagedAtParser`).
        fields: reads institution and drop from paths whose row has none.

    Raises:
        ResultsError: naming the file, line and column of a malformed row, or the
            missing columns.
    """
    parser = ImagedAtParser(imaged_at_pattern)
    fields = fields or PathFields()
    images = []
    try:
        handle = filesystem.open_text(csv_path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ResultsError(f"{csv_path}: cannot read the results file: {exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ResultsError(f"{csv_path}: not a results file: no column "
                               f"{', '.join(repr(c) for c in missing)} (columns: "
                               f"{', '.join(header) or 'none'})")
        for line, row in enumerate(reader, start=2):
            source = f"{csv_path}, line {line}"
            path = (row.get("path") or "").strip()
            if not path:
                raise ResultsError(f"{source}, column 'path': empty")
            error = (row.get("error") or "").strip()
            cells = [(row.get(name) or "").strip() for name in CLASS_NAMES]
            if error and not any(cells):
                probabilities = None
            else:
                probabilities = tuple(_probability(cell, source, name)
                                      for cell, name in zip(cells, CLASS_NAMES, strict=True))
            imaged_at = (row.get("imaged_at") or "").strip()
            try:
                imaged_at = (normalise_imaged_at(imaged_at, f"{source}, column 'imaged_at'")
                             if imaged_at else parser.parse(path))
            except ValueError as exc:
                raise ResultsError(str(exc)) from None
            images.append(Image(
                path=path,
                probabilities=probabilities,
                plate=(row.get("plate") or "").strip(),
                well=(row.get("well") or "").strip(),
                drop=(row.get("drop") or "").strip() or fields.parse(path, "drop"),
                imaged_at=imaged_at,
                institution=((row.get("institution") or "").strip()
                             or fields.parse(path, "institution")),
                heatmap=(row.get("heatmap") or "").strip(),
                error=error,
            ))
    return images


def _key(path: str) -> str:
    return path if filesystem.is_remote(path) else os.path.normpath(os.path.abspath(path))


def read_overlays(csv_path: str) -> dict[str, str]:
    """Image path -> overlay image, from a heatmaps file (``marco explain``'s CSV file).

    The file needs the columns ``path`` and ``overlay``; overlays are relative to the
    file's folder (or absolute). Rows without an overlay (errors) are left out.

    Raises:
        ResultsError: naming the file and the missing columns.
    """
    base = filesystem.parent(_key(csv_path))
    overlays = {}
    try:
        handle = filesystem.open_text(csv_path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ResultsError(f"{csv_path}: cannot read the heatmaps file: {exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if "path" not in header or "overlay" not in header:
            raise ResultsError(f"{csv_path}: not a heatmaps file: it needs the columns "
                               f"'path' and 'overlay' (columns: {', '.join(header) or 'none'})")
        for row in reader:
            path, overlay = (row.get("path") or "").strip(), (row.get("overlay") or "").strip()
            if path and overlay:
                overlays[_key(path)] = (overlay if filesystem.is_absolute(overlay)
                                        else filesystem.join(base, overlay))
    return overlays


def attach_overlays(images: list[Image], overlays: dict[str, str]) -> int:
    """Gives each image without a heatmap its overlay from ``overlays``; returns how many."""
    count = 0
    for image in images:
        if not image.heatmap:
            overlay = overlays.get(_key(image.path))
            if overlay:
                image.heatmap = overlay
                count += 1
    return count


@dataclasses.dataclass
class Plate:
    name: str
    format: int
    rows: int
    columns: int


@dataclasses.dataclass
class Series:
    """One drop: its plate (index into the plates, or -1), place, and images in time order."""

    plate: int
    well: str
    row: int
    column: int
    drop: str
    images: list[int]


@dataclasses.dataclass
class Layout:
    plates: list[Plate]
    series: list[Series]
    series_of: list[int]  # image index -> series index


def _natural(text: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part
                 for part in re.split(r"([0-9]+)", text.lower()))


def lay_out(images: list[Image], plate_format: int | None = None,
            source: str = "results") -> Layout:
    """Plates in their geometry and the drops (time series) of ``images``.

    Raises:
        ResultsError: for a well name that is no well, or that does not fit its plate.
    """
    wells: dict[str, dict[str, Well]] = {}
    for number, image in enumerate(images):
        if not (image.plate and image.well):
            continue
        well = parse_well(image.well)
        if well is None:
            raise ResultsError(f"{source}, row {number + 1} ({image.path}), column 'well': "
                               f"{image.well!r} is not a well name (A01, H12, AF48 or a "
                               "number)")
        wells.setdefault(image.plate, {})[image.well] = well
    plates, plate_index = [], {}
    for name in sorted(wells, key=_natural):
        size = plate_format_for(wells[name].values(), name, plate_format)
        rows, columns = PLATE_FORMATS[size]
        plate_index[name] = len(plates)
        plates.append(Plate(name, size, rows, columns))
    keyed: dict[tuple, list[int]] = {}
    for number, image in enumerate(images):
        if image.plate in plate_index and image.well:
            key = (image.plate, image.well, image.drop or "1")
        else:
            key = ("", "", image.path)
        keyed.setdefault(key, []).append(number)
    series = []
    for key, members in keyed.items():
        members.sort(key=lambda i: (images[i].imaged_at, images[i].path))
        plate, well_name, drop = key
        if plate:
            index = plate_index[plate]
            row, column = wells[plate][well_name].place(plates[index].columns)
            series.append(Series(index, well_name, row, column, drop, members))
        else:
            series.append(Series(-1, images[members[0]].well, -1, -1, "", members))
    series.sort(key=lambda s: (s.plate < 0, s.plate, s.row, s.column, _natural(s.drop),
                               images[s.images[0]].path))
    series_of = [0] * len(images)
    for position, entry in enumerate(series):
        for member in entry.images:
            series_of[member] = position
    return Layout(plates, series, series_of)
