"""Label records, and the one set of rules that accepts or refuses each of them.

Ingestion (ImageExampleGen's Beam stages, :mod:`components.ingestion.beam_stages`) and
``marco sources validate`` (:mod:`components.tools.validation`) both run these
functions, so that the two give the same verdict, for the same reason, on the same
record, on a local disk or an object store alike:

1. The layout readers (:mod:`components.readers`) turn an institution's files into
   :class:`Record` and :class:`BadRecord` items; a row they cannot read is one
   :class:`BadRecord` naming the file and line, never the end of the file. Every item
   then passes :func:`checked`: its text must be UTF-8 and its image path must lie
   inside the data folder (:func:`place_image`), or it becomes a :class:`BadRecord`
   too, before any image file is opened.
2. Repeated image ids: :func:`id_entry` gives the (image id, locator) of every record
   that takes part, :func:`duplicate_locators` keeps the smallest locator of each id,
   whichever worker or order read them, and :func:`duplicate_refusal` refuses the
   others.
3. :func:`judge` gives each item its verdict: :class:`Refusal` (a reason below, or
   one of :mod:`components.imagecheck`'s) or :class:`Passed` with the image's bytes.

Every record read is either passed or refused: records seen = ingested + quarantined.

4. Label overrides (the catalogue's ``overrides/<CODE>.csv``, read by
   :mod:`components.catalogue`): :func:`label_override` gives a passed record's label
   as an expert corrected it. The example then carries the new class in
   :data:`OVERRIDE_CLASS_KEY` and ``override`` in :data:`LABEL_SOURCE_KEY` (every
   other example says ``catalogue``); Transform takes its label from there. An image
   the expert disputed is refused (:data:`DISPUTED_LABEL`). :func:`missing_overrides`
   lists overrides whose image no record has.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from components import filesystem, imagecheck
from components.catalogue import Catalogue, Override, Source

# Reasons a record is refused (quarantined), beside imagecheck's reasons for image
# files. Stable strings: counter names, the quarantine CSV's `reason` column and the
# kinds `marco sources validate` reports.
MISSING_FIELD = "missing_field"  # an empty image path or label; a shard record lacking a feature
BAD_RECORD = "bad_record"  # a row with too few or too many cells; a line that is not a JSON object
BAD_MANIFEST = "bad_manifest"  # a manifest whose header lacks a configured column
UNDECODABLE_RECORD = "undecodable_record"  # a row or line whose bytes are not UTF-8
UNREADABLE_RECORDS = "unreadable_records"  # a whole manifest or export that cannot be read
OUTSIDE_DATA_ROOT = "outside_data_root"  # an image path that leaves the data folder
UNMAPPED_LABEL = "unmapped_label"  # a native label the catalogue does not map
DUPLICATE_ID = "duplicate_image_id"  # an image id another record (the kept one) also has
# Published MARCO shards only (their records carry image bytes, not paths):
UNKNOWN_INSTITUTION = "unknown_institution"  # image/class/source of no institution
LABEL_CONFLICT = "label_conflict"  # image/class/label disagrees with the catalogue
CORRUPT_RECORD = "corrupt_record"  # not a tf.Example, or a damaged TFRecord frame

DISPUTED_LABEL = "disputed_label"  # an expert disputed the image's label (overrides file)
OVERRIDE_MISSING_IMAGE = "override_missing_image"  # an override names no image of the data

# The values of LABEL_SOURCE_KEY (see the module's step 4).
FROM_CATALOGUE = "catalogue"
FROM_OVERRIDE = "override"
LABEL_SOURCES = (FROM_CATALOGUE, FROM_OVERRIDE)

# Python's decoder, with errors="surrogateescape", turns each byte it cannot decode
# into one of these code points; readers open text that way and look for them.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Record:
    """One labelled image as an institution recorded it."""

    institution: str
    image_id: str
    path: str
    native_label: str
    origin: str
    plate: str = ""
    well: str = ""
    imaged_at: str = ""


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be read or placed; ``origin`` names the file and line."""

    institution: str
    origin: str
    reason: str
    detail: str = ""
    path: str = ""


@dataclass(frozen=True)
class Refusal:
    """Why a record is not used."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Passed:
    """A usable record: its image's bytes as read and what they decode to.

    ``info`` is None (and ``data`` empty) when the image was only found, not decoded.
    """

    data: bytes = b""
    info: imagecheck.ImageInfo | None = None


def undecodable(text: str) -> str | None:
    """Where ``text`` (decoded with ``errors="surrogateescape"``) holds bytes that are
    not UTF-8, as a sentence; None when it is all text."""
    found = _ESCAPED_BYTE.search(text)
    if found is None:
        return None
    return (
        f"byte 0x{ord(found.group()) - 0xDC00:02x} at character {found.start() + 1} is not "
        f"UTF-8 text; save the file as UTF-8"
    )


def printable(text: str) -> str:
    """``text`` with each byte that is not UTF-8 written as ``\\xff``, fit for a report."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _prefix_key(prefix: str) -> str:
    return prefix.replace("\\", "/").rstrip("/")


def map_prefix(path: str, prefixes: Sequence[tuple[str, str]]) -> str | None:
    """The folder below the data root that a mapped prefix gives ``path``, or None.

    ``prefixes`` are the catalogue's ``path_prefixes`` pairs (absolute prefix, folder
    below the data root). Both kinds of slash are the same; the prefix must end at a
    path separator of ``path``; the longest matching prefix wins.
    """
    spelled = str(path).replace("\\", "/")
    best: tuple[str, str] | None = None
    for prefix, folder in prefixes:
        key = _prefix_key(prefix)
        if (spelled == key or spelled.startswith(key + "/")) and (
            best is None or len(key) > len(best[0])
        ):
            best = (key, folder)
    if best is None:
        return None
    rest = spelled[len(best[0]):].lstrip("/")
    return posixpath.join(best[1], rest) if rest else best[1]


def place_image(path: str, data_root: str, source: Source) -> str | Refusal:
    """The path to read an image from, or why it must not be read.

    ``path`` is as the reader resolved it against the layout's image folder: relative
    rows are joined, absolute ones (a URL, a POSIX or Windows path) kept as written.
    A path is used when it lies inside ``data_root`` once ``.``, ``..`` and symbolic
    links are resolved (:func:`filesystem.contains`). Otherwise a path whose
    beginning is one of the institution's ``path_prefixes`` is moved onto the data
    folder and must then lie inside it. Nothing is opened to find out.
    """
    if filesystem.contains(data_root, path):
        return path
    mapped = map_prefix(path, source.path_prefixes) if filesystem.is_absolute(path) else None
    if mapped is not None:
        path = filesystem.join(data_root, mapped)
        if filesystem.contains(data_root, path):
            return path
    shown = path if filesystem.is_windows_absolute(path) else filesystem.resolve(path)
    hint = "" if mapped is not None else (
        f"; an imager's own absolute paths can be mapped onto a folder of the data folder "
        f"with path_prefixes in {source.file.name}"
    )
    return Refusal(
        OUTSIDE_DATA_ROOT,
        f"{shown} is outside the data folder {filesystem.resolve(data_root)}{hint}",
    )


def checked(item: Record | BadRecord, source: Source, data_root: str) -> Record | BadRecord:
    """A reader's item as ingestion and validation see it: a record whose text is not
    UTF-8 or whose image lies outside ``data_root`` becomes a :class:`BadRecord`, and
    a mapped path prefix is applied."""
    if isinstance(item, BadRecord):
        return item
    for name in ("path", "native_label", "image_id", "plate", "well", "imaged_at", "origin"):
        problem = undecodable(getattr(item, name))
        if problem:
            return BadRecord(item.institution, printable(item.origin), UNDECODABLE_RECORD,
                             f"{name}: {problem}", printable(item.path))
    placed = place_image(item.path, data_root, source)
    if isinstance(placed, Refusal):
        return BadRecord(item.institution, item.origin, placed.reason, placed.detail, item.path)
    return item if placed == item.path else dataclasses.replace(item, path=placed)


def label_refusal(record: Record, source: Source) -> Refusal | None:
    if source.class_of(record.native_label) is None:
        return Refusal(
            UNMAPPED_LABEL,
            f"native label {record.native_label!r} is not mapped in {source.file.name}",
        )
    return None


def id_entry(item: Record | BadRecord, catalogue: Catalogue) -> tuple[str, str] | None:
    """(image id, locator) of a record that takes part in duplicate detection: a
    readable record with a mapped label (the ones refused earlier keep no id)."""
    if not isinstance(item, Record):
        return None
    if catalogue.class_of(item.institution, item.native_label) is None:
        return None
    return item.image_id, item.origin


def duplicate_locators(id_and_locators: tuple[str, Iterable[str]]) -> Iterator[tuple[str, str]]:
    """(dropped locator, kept locator) for every copy of an id but the first.

    The smallest locator is kept, so the choice does not depend on worker order.
    """
    _, locators = id_and_locators
    ordered = sorted(locators)
    for locator in ordered[1:]:
        yield locator, ordered[0]


def find_duplicates(entries: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Dropped locator -> kept locator, from (image id, locator) pairs: what the Beam
    stages compute by grouping, in one process."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for image_id, locator in entries:
        grouped[image_id].append(locator)
    return {
        dropped: kept
        for group in grouped.items()
        for dropped, kept in duplicate_locators(group)
    }


def duplicate_refusal(
    locator: str, image_id: str, duplicates: Mapping[str, str]
) -> Refusal | None:
    kept = duplicates.get(locator)
    if kept is None:
        return None
    return Refusal(DUPLICATE_ID, f"image id {image_id!r} is also at {kept}, which is kept")


def judge(
    item: Record | BadRecord,
    catalogue: Catalogue,
    duplicates: Mapping[str, str],
    max_pixels: int = imagecheck.DEFAULT_MAX_PIXELS,
    *,
    decode: bool = True,
) -> Passed | Refusal:
    """The verdict on one item, rules in order: readable, mapped label, first copy of
    its id, a usable image.

    Args:
        item: a reader's item, after :func:`checked`.
        catalogue: the institutions and their label mappings.
        duplicates: dropped locator -> kept locator (:func:`find_duplicates`).
        max_pixels: the decompression-bomb limit.
        decode: read and fully decode the image; when False only check the file exists.
    """
    if isinstance(item, BadRecord):
        return Refusal(item.reason, item.detail)
    refusal = label_refusal(item, catalogue.get(item.institution)) or duplicate_refusal(
        item.origin, item.image_id, duplicates
    )
    if refusal is not None:
        return refusal
    if not decode:
        try:
            found = filesystem.isfile(item.path)
        except OSError as exc:
            return Refusal(imagecheck.UNREADABLE, f"{type(exc).__name__}: {exc}")
        return Passed() if found else Refusal(imagecheck.MISSING, "file does not exist")
    try:
        data, info = imagecheck.read_and_inspect(item.path, max_pixels)
    except imagecheck.BadImage as exc:
        return Refusal(exc.reason, exc.detail)
    return Passed(data, info)


def label_override(
    institution: str, image_id: str, catalogue: Catalogue
) -> Override | Refusal | None:
    """The expert's override of one image's label; a :class:`Refusal` when the expert
    disputed it; None when the catalogue's label stands."""
    override = catalogue.get(institution).override_of(image_id)
    if override is None:
        return None
    if override.disputed:
        who = f" by {override.reviewer}" if override.reviewer else ""
        note = f": {override.note}" if override.note else ""
        return Refusal(DISPUTED_LABEL, f"label disputed{who} in {override.origin}{note}")
    return override


def missing_overrides(
    catalogue: Catalogue, seen: Mapping[str, Iterable[str]]
) -> Iterator[Override]:
    """Every override whose image is not among ``seen`` (institution -> image ids read)."""
    for source in catalogue:
        if not source.overrides:
            continue
        ids = set(seen.get(source.code, ()))
        for image_id, override in source.overrides.items():
            if image_id not in ids:
                yield override
