"""What ``marco score`` is given, turned into image paths; and plate/well read from a path.

An input is one of:

- a folder: searched recursively for files with the extension of a format scoring
  decodes (:data:`IMAGE_SUFFIXES`, any case); other files are left alone;
- a glob (``plates/**/*.jpg``, quoted so the shell leaves it): every match is scored,
  and a matching folder is searched as above;
- a manifest, a file ending in one of :data:`MANIFEST_SUFFIXES`: ``.csv``/``.tsv``
  files take the paths from a column (``--path-column``, else the first header among
  :data:`PATH_COLUMNS`, else the first column, without a header row); other manifests
  list one path per line (blank lines and ``#`` comments skipped). Relative paths are
  relative to the manifest's folder;
- any other file: one image.

:func:`check_inputs` classifies and checks the inputs in the driver (quick: nothing is
listed); :func:`list_images` lists one of them and runs on Beam workers. Local paths
come out absolute; ``gs://`` and other remote paths as they are.
"""

from __future__ import annotations

import csv
import dataclasses
import glob as local_glob
import os
import re
from collections.abc import Iterator, Sequence

from components import filesystem
from components.imagecheck import SCORING_FORMATS, extensions

IMAGE_SUFFIXES = tuple(f".{ext}" for ext in extensions(SCORING_FORMATS))
MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt", ".lst", ".list")
PATH_COLUMNS = ("path", "image_path", "image", "file", "filename", "filepath", "file_path")
GLOB_CHARACTERS = frozenset("*?[")

# A plate id, then "_" or "/", then a well of a 96- or 384-well plate (A1-P24, with or
# without a leading zero), at the start of the file name or after the plate's own
# folder; anything after the well must start with "_", ".", "-" or a space. Matches
# "GSK781830_A01_20140114.jpg", "PLATE7/B12_1.png", "20140114/PLATE7_B12.jpg". The
# greedy prefix takes the pair nearest the end of the path, so in "P1/P1_A01.jpg" the
# well is A01, not the plate folder's name, which also looks like a well.
DEFAULT_PLATE_WELL_PATTERN = (
    r"^(?:.*[/_-])?(?P<plate>[A-Za-z0-9]+)[/_]"
    r"(?P<well>[A-P](?:0?[1-9]|1[0-9]|2[0-4]))(?:[_. -][^/]*)?$"
)

FOLDER = "folder"
GLOB = "glob"
MANIFEST = "manifest"
IMAGE = "image"


class InputError(ValueError):
    """An input that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """One command-line input, classified.

    Attributes:
        kind: :data:`FOLDER`, :data:`GLOB`, :data:`MANIFEST` or :data:`IMAGE`.
        location: the absolute local path (or remote URL) or the glob pattern.
        path_column: for CSV manifests, the column holding the paths (None: the
            first of :data:`PATH_COLUMNS` in the header, else the first column).
    """

    kind: str
    location: str
    path_column: str | None = None


def _absolute(path: str) -> str:
    return path if filesystem.is_remote(path) else os.path.abspath(os.path.expanduser(path))


def is_glob(text: str) -> bool:
    return any(c in GLOB_CHARACTERS for c in text)


def is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def _glob(pattern: str) -> Iterator[str]:
    if filesystem.is_remote(pattern):
        yield from filesystem.glob(pattern)
    else:
        yield from local_glob.iglob(pattern, recursive=True)


def check_inputs(args: Sequence[str], path_column: str | None = None) -> list[ImageSource]:
    """Classifies each command-line input; fails on the first that cannot be used.

    Args:
        args: folders, globs, manifests or image files, as typed.
        path_column: the CSV manifests' path column, when not found by name.

    Raises:
        InputError: naming an input that does not exist, a glob matching nothing, or a
            CSV manifest without the requested column.
    """
    if not args:
        raise InputError("no images given: name folders, globs, manifests or image files")
    sources = []
    for arg in args:
        location = _absolute(arg)
        if filesystem.isdir(location):
            sources.append(ImageSource(FOLDER, location))
        elif filesystem.exists(location):
            if location.lower().endswith(MANIFEST_SUFFIXES):
                source = ImageSource(MANIFEST, location, path_column)
                _manifest_column(source)  # fails now on a missing column
                sources.append(source)
            else:
                sources.append(ImageSource(IMAGE, location))
        elif is_glob(arg):
            if next(iter(_glob(location)), None) is None:
                raise InputError(f"{arg}: the pattern matches no file or folder")
            sources.append(ImageSource(GLOB, location))
        else:
            raise InputError(f"{arg}: no such file or folder")
    return sources


def _walk_images(folder: str, exclude: Sequence[str]) -> Iterator[str]:
    excluded = {os.path.normpath(e) for e in exclude}
    for dirpath, dirnames, filenames in filesystem.walk(folder):
        if not filesystem.is_remote(folder):
            dirnames[:] = [d for d in dirnames
                           if os.path.normpath(os.path.join(dirpath, d)) not in excluded]
        for name in filenames:
            if is_image_name(name):
                yield filesystem.join(dirpath, name)


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".tsv"))


def _csv_rows(path: str) -> Iterator[list[str]]:
    with filesystem.open_text(path, encoding="utf-8-sig", newline="") as handle:
        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        yield from csv.reader(handle, delimiter=delimiter)


def _manifest_column(source: ImageSource) -> tuple[int, bool]:
    """(index of the path column, whether the first row is a header) of a CSV manifest."""
    if not _is_csv(source.location):
        return 0, False
    try:
        header = next(_csv_rows(source.location), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{source.location}: cannot read the manifest: {exc}") from None
    names = [cell.strip().lower() for cell in header]
    if source.path_column is not None:
        wanted = source.path_column.strip().lower()
        if wanted not in names:
            raise InputError(f"{source.location}: no column {source.path_column!r} "
                             f"(columns: {', '.join(header) or 'none'})")
        return names.index(wanted), True
    for candidate in PATH_COLUMNS:
        if candidate in names:
            return names.index(candidate), True
    return 0, False


def _manifest_entries(source: ImageSource) -> Iterator[str]:
    """The path cells or lines of a manifest, read as a stream."""
    if _is_csv(source.location):
        column, has_header = _manifest_column(source)
        rows = _csv_rows(source.location)
        if has_header:
            next(rows, None)
        for row in rows:
            if len(row) > column:
                yield row[column].strip()
        return
    with filesystem.open_text(source.location, encoding="utf-8-sig") as handle:
        for line in handle:
            entry = line.strip()
            if not entry.startswith("#"):
                yield entry


def _manifest_paths(source: ImageSource) -> Iterator[str]:
    base = filesystem.parent(source.location)
    for entry in _manifest_entries(source):
        if entry:
            yield _absolute(filesystem.join(base, os.path.expanduser(entry)))


def list_images(source: ImageSource, exclude: Sequence[str] = ()) -> Iterator[str]:
    """The image paths one input stands for (duplicates are removed later).

    Args:
        source: from :func:`check_inputs`.
        exclude: local folders not to search (the hits folder, when it lies inside an
            input folder, so a second run does not score the copies).
    """
    if source.kind == FOLDER:
        yield from _walk_images(source.location, exclude)
    elif source.kind == GLOB:
        for match in _glob(source.location):
            if filesystem.isdir(match):
                yield from _walk_images(match, exclude)
            else:
                yield _absolute(match)
    elif source.kind == MANIFEST:
        yield from _manifest_paths(source)
    elif source.kind == IMAGE:
        yield source.location
    else:
        raise ValueError(f"unknown input kind {source.kind!r}")


class PlateWellParser:
    """Reads plate and well from an image path with a regular expression.

    The pattern is searched (``re.search``) in the path written with ``/`` separators;
    its named groups ``plate`` and ``well`` (at least one of them) give the values.
    Paths it does not match get empty values.

    Raises:
        ValueError: for a pattern that does not compile or has neither group.
    """

    def __init__(self, pattern: str = DEFAULT_PLATE_WELL_PATTERN) -> None:
        try:
            self._regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"plate/well pattern {pattern!r} is not a valid regular "
                             f"expression: {exc}") from None
        groups = set(self._regex.groupindex)
        if not groups & {"plate", "well"}:
            raise ValueError(f"plate/well pattern {pattern!r} has no (?P<plate>...) or "
                             "(?P<well>...) group")
        self.pattern = pattern

    def parse(self, path: str) -> tuple[str, str]:
        match = self._regex.search(path.replace(os.sep, "/"))
        if match is None:
            return "", ""
        found = match.groupdict()
        return found.get("plate") or "", found.get("well") or ""
