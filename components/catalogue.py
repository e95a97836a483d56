"""The source catalogue: one YAML file per institution, loaded and checked.

Each file in ``schemas/sources/`` is the single source of truth for one institution:
who it is, which imager produced its images, how its label records are laid out on
disk (and, with ``path_prefixes``, how an imager's own absolute image paths map onto
the data folder), its native label vocabulary and the mapping of every native label to one of
MARCO's four classes. Everything else (readers, the synthetic generator, the TFDV
schema, the Transform label collapse) derives from the :class:`Catalogue` built here.

A layout names one of four readers (:data:`READER_OPTIONS`): ``csv_manifest`` (a
delimited manifest, ``columns`` by header name), ``jsonl`` (JSON lines, ``fields`` by
dotted key), ``xml`` (an imager's XML export: ``records`` by element path, ``fields``
by child-element and attribute paths, see :data:`XML_FIELD_PATH`) and
``folder_per_label``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components import filesystem
from components.imagecheck import EXAMPLE_FORMATS, format_names
from components.names import CLASS_IDS, CLASS_NAMES
from schemas import SOURCES_DIR

CODE_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")
COLOUR_MODES = ("rgb", "grey", "mixed")
# What `marco synth` may write for an institution: the formats ingestion accepts.
IMAGE_FORMATS = format_names(EXAMPLE_FORMATS)

# Reader name -> (required option keys, optional option keys).
READER_OPTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "csv_manifest": (
        frozenset({"manifest", "columns"}),
        frozenset({"image_root", "delimiter", "path_pattern"}),
    ),
    "folder_per_label": (
        frozenset({"root"}),
        frozenset({"extensions", "path_pattern"}),
    ),
    "jsonl": (
        frozenset({"files", "fields"}),
        frozenset({"image_root", "path_pattern"}),
    ),
    "xml": (
        frozenset({"files", "records", "fields"}),
        frozenset({"image_root", "path_pattern"}),
    ),
}
# Columns (CSV) or fields (JSON lines, XML) a record may carry; path and label are required.
RECORD_FIELDS = ("path", "label", "image_id", "plate", "well", "imaged_at")
REQUIRED_RECORD_FIELDS = ("path", "label")
PATH_PATTERN_GROUPS = frozenset({"plate", "well", "imaged_at", "image_id"})
# XML exports: ``records`` is the path of element names from the document's root element
# to each record element (``Plate/Drop``); a field is a path from the record element to
# a child element's text (``Score``, ``Image/Path``) or an attribute (``@well``,
# ``Image/@path``), after any number of ``..`` for an enclosing element
# (``../@barcode``). Names are local names: a namespace, if any, is ignored.
_XML_NAME = r"[^\W\d][\w.-]*"
XML_RECORDS_PATH = re.compile(rf"^{_XML_NAME}(?:/{_XML_NAME})*$")
XML_FIELD_PATH = re.compile(rf"^(?:\.\./)*(?:{_XML_NAME}/)*@?{_XML_NAME}$")

TOP_LEVEL_REQUIRED = ("code", "name", "imager", "setup", "layout", "labels")
TOP_LEVEL_OPTIONAL = ("marco_source_id", "paper_images", "imaging", "notes", "path_prefixes")
LABEL_REQUIRED = ("native", "class")
LABEL_OPTIONAL = ("marco_raw_id", "description")


# Label overrides: ``overrides/<CODE>.csv`` beside the institution files, one row per
# image an expert relabelled (``marco review`` writes this format).
OVERRIDES_DIR = "overrides"
OVERRIDE_COLUMNS = ("institution", "image_id", "old_label", "new_class", "reviewer", "note", "time")
# The new_class of an image the expert could not or would not label: ingestion leaves it
# out of the data set (quarantined as ``disputed_label``) rather than train on it.
DISPUTE = "dispute"
OVERRIDE_CLASSES = (*CLASS_NAMES, DISPUTE)


class CatalogueError(ValueError):
    """A catalogue file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Override:
    """One expert's decision on one image's label, as an overrides file records it.

    ``origin`` is the file and line, for messages. ``new_class`` is one of MARCO's
    classes or :data:`DISPUTE`.
    """

    institution: str
    image_id: str
    old_label: str
    new_class: str
    reviewer: str = ""
    note: str = ""
    time: str = ""
    origin: str = ""

    @property
    def disputed(self) -> bool:
        return self.new_class == DISPUTE

    @property
    def class_id(self) -> int:
        return CLASS_IDS[self.new_class]


@dataclass(frozen=True)
class NativeLabel:
    """One word (or code) of an institution's own vocabulary and its MARCO class."""

    native: str
    class_name: str
    marco_raw_id: int | None = None
    description: str = ""

    @property
    def class_id(self) -> int:
        return CLASS_IDS[self.class_name]


@dataclass(frozen=True)
class Imaging:
    """What the institution's imager produces (paper Table 1), used by the generator."""

    colour: str = "rgb"
    width: int = 1280
    height: int = 960
    formats: tuple[str, ...] = ("jpeg",)


@dataclass(frozen=True)
class Layout:
    """How label records are laid out: a reader name and its options."""

    reader: str
    options: Mapping[str, Any]

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    @property
    def record_fields(self) -> Mapping[str, str]:
        """Record field -> column, JSON key or XML path, for the manifest, JSON-lines
        and XML readers."""
        return self.options.get("columns") or self.options.get("fields") or {}


@dataclass(frozen=True)
class Source:
    """One institution of the catalogue."""

    code: str
    name: str
    imager: str
    setup: str
    layout: Layout
    labels: tuple[NativeLabel, ...]
    file: Path
    marco_source_id: int | None = None
    paper_images: int | None = None
    imaging: Imaging = field(default_factory=Imaging)
    notes: str = ""
    # (absolute path prefix, folder below the data folder) pairs: how the image paths
    # an imager writes (``\\imager\RockMakerStorage\...``) map onto the data folder.
    path_prefixes: tuple[tuple[str, str], ...] = ()
    # Image id -> the expert's override (``overrides/<CODE>.csv``), and that file.
    overrides: Mapping[str, Override] = field(default_factory=dict, hash=False)
    overrides_file: Path | None = None

    def override_of(self, image_id: str) -> Override | None:
        """The override of one image of this institution, or None."""
        return self.overrides.get(image_id)

    @property
    def label_map(self) -> dict[str, int]:
        """Native label -> class id."""
        return {label.native: label.class_id for label in self.labels}

    def class_of(self, native: str) -> int | None:
        """The class id of a native label, or None when the label is not mapped."""
        return self.label_map.get(native)


@dataclass(frozen=True)
class Catalogue:
    """All institutions, with look-ups by code and by published MARCO ids."""

    sources: tuple[Source, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(source.code for source in self.sources)

    def __iter__(self):
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)

    def get(self, code: str) -> Source:
        for source in self.sources:
            if source.code == code:
                return source
        raise KeyError(f"institution {code!r} is not in the catalogue (known: {self.codes})")

    def class_of(self, code: str, native: str) -> int | None:
        """Class id of (institution, native label); None if either is unknown."""
        for source in self.sources:
            if source.code == code:
                return source.class_of(native)
        return None

    def by_marco_source_id(self) -> dict[int, Source]:
        return {s.marco_source_id: s for s in self.sources if s.marco_source_id is not None}

    def by_marco_raw_id(self) -> dict[int, tuple[Source, NativeLabel]]:
        """Published raw-label id -> (institution, native label)."""
        return {
            label.marco_raw_id: (source, label)
            for source in self.sources
            for label in source.labels
            if label.marco_raw_id is not None
        }

    def native_labels(self) -> list[tuple[str, str]]:
        """Every (institution code, native label) pair, in catalogue order."""
        return [(s.code, label.native) for s in self.sources for label in s.labels]

    def mapping_rows(self) -> list[tuple[str, str, int]]:
        """(institution, native label, class id) rows: the one label-collapse table."""
        return [(s.code, lab.native, lab.class_id) for s in self.sources for lab in s.labels]


def _err(path: Path, key: str, message: str) -> CatalogueError:
    return CatalogueError(f"{path}: {key}: {message}")


def _check_keys(
    path: Path, where: str, data: Mapping, required: Iterable[str], optional: Iterable[str]
) -> None:
    missing = [k for k in required if k not in data]
    if missing:
        raise _err(path, where + missing[0], "missing required key")
    allowed = set(required) | set(optional)
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise _err(path, where + unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _require_str(path: Path, key: str, value: Any) -> str:
    if value is None or value == "":
        raise _err(path, key, "is empty; fill it in")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _err(path, key, f"must be a non-empty string, got {value!r}")
    return str(value)


def _unfilled(entry: Any) -> bool:
    """True for a label entry whose class was left empty (as ``marco sources add`` writes)."""
    if not isinstance(entry, Mapping) or "class" not in entry:
        return False
    value = entry["class"]
    return value is None or (isinstance(value, str) and not value.strip())


def _require_int(path: Path, key: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _err(path, key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _parse_layout(path: Path, data: Any) -> Layout:
    if not isinstance(data, Mapping):
        raise _err(path, "layout", "must be a mapping with a 'reader' key")
    reader = data.get("reader")
    if reader not in READER_OPTIONS:
        raise _err(
            path,
            "layout.reader",
            f"unknown reader {reader!r} (one of: {', '.join(READER_OPTIONS)})",
        )
    required, optional = READER_OPTIONS[reader]
    options = {k: v for k, v in data.items() if k != "reader"}
    _check_keys(path, "layout.", options, sorted(required), optional)
    for key in ("manifest", "root", "files", "image_root", "delimiter"):
        if key in options:
            _require_str(path, f"layout.{key}", options[key])
    record_key = "columns" if reader == "csv_manifest" else "fields"
    if record_key in options:
        mapping = options[record_key]
        if not isinstance(mapping, Mapping):
            raise _err(path, f"layout.{record_key}", "must map record fields to names")
        _check_keys(
            path, f"layout.{record_key}.", mapping, REQUIRED_RECORD_FIELDS, RECORD_FIELDS[2:]
        )
        for name, value in mapping.items():
            _require_str(path, f"layout.{record_key}.{name}", value)
        options[record_key] = {k: str(v) for k, v in mapping.items()}
    if reader == "xml":
        _check_xml_paths(path, options)
    if "extensions" in options:
        exts = options["extensions"]
        if not isinstance(exts, list) or not exts:
            raise _err(path, "layout.extensions", "must be a non-empty list such as [jpg, png]")
        options["extensions"] = tuple(str(e).lower().lstrip(".") for e in exts)
    if "path_pattern" in options:
        try:
            pattern = re.compile(str(options["path_pattern"]))
        except re.error as exc:
            raise _err(
                path, "layout.path_pattern", f"not a valid regular expression: {exc}"
            ) from None
        unknown = set(pattern.groupindex) - PATH_PATTERN_GROUPS
        if unknown:
            raise _err(
                path,
                "layout.path_pattern",
                f"unknown group(s) {sorted(unknown)}; use {sorted(PATH_PATTERN_GROUPS)}",
            )
    return Layout(reader=reader, options=options)


def _check_xml_paths(path: Path, options: Mapping[str, Any]) -> None:
    """The ``records`` path and every field path of an ``xml`` layout (see XML_FIELD_PATH)."""
    records = _require_str(path, "layout.records", options["records"])
    if not XML_RECORDS_PATH.match(records):
        raise _err(path, "layout.records", f"{records!r} is not a path of element names "
                   "from the root element, such as Plate/Drop")
    depth = records.count("/") + 1
    for name, value in options["fields"].items():
        if not XML_FIELD_PATH.match(value):
            raise _err(path, f"layout.fields.{name}", f"{value!r} is not a path from the "
                       "record element to a child element or an attribute, such as Score, "
                       "Image/@path or ../@barcode")
        if value.count("../") >= depth:
            raise _err(path, f"layout.fields.{name}", f"{value!r} climbs above the root "
                       f"element (layout.records is {records!r})")


def _parse_imaging(path: Path, data: Any) -> Imaging:
    if data is None:
        return Imaging()
    if not isinstance(data, Mapping):
        raise _err(path, "imaging", "must be a mapping")
    _check_keys(path, "imaging.", data, (), ("colour", "width", "height", "formats"))
    colour = data.get("colour", "rgb")
    if colour not in COLOUR_MODES:
        raise _err(path, "imaging.colour", f"must be one of {COLOUR_MODES}, got {colour!r}")
    formats = tuple(data.get("formats", ["jpeg"]))
    bad = [f for f in formats if f not in IMAGE_FORMATS]
    if bad or not formats:
        raise _err(path, "imaging.formats", f"must be a list from {IMAGE_FORMATS}, got {formats}")
    return Imaging(
        colour=colour,
        width=_require_int(path, "imaging.width", data.get("width", 1280), 16),
        height=_require_int(path, "imaging.height", data.get("height", 960), 16),
        formats=formats,
    )


def _parse_labels(path: Path, data: Any) -> tuple[NativeLabel, ...]:
    if not isinstance(data, list) or not data:
        raise _err(path, "labels", "must be a non-empty list of {native, class} entries")
    labels: list[NativeLabel] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(data):
        where = f"labels[{i}]"
        if not isinstance(entry, Mapping):
            raise _err(path, where, "must be a mapping with 'native' and 'class'")
        _check_keys(path, where + ".", entry, LABEL_REQUIRED, LABEL_OPTIONAL)
        native = _require_str(path, where + ".native", entry["native"])
        class_name = entry["class"]
        if _unfilled(entry):
            others = [
                repr(str(e.get("native"))) for j, e in enumerate(data) if j != i and _unfilled(e)
            ]
            also = f"; also without a class: {', '.join(others)}" if others else ""
            raise _err(
                path,
                where + ".class",
                f"no class given for native label {native!r}: fill in one of "
                f"{', '.join(CLASS_NAMES)}{also}",
            )
        if not isinstance(class_name, str) or class_name not in CLASS_IDS:
            raise _err(
                path,
                where + ".class",
                f"{class_name!r} for native label {native!r} is not one of the 4 classes "
                f"({', '.join(CLASS_NAMES)})",
            )
        if native in seen:
            raise _err(
                path,
                where + ".native",
                f"native label {native!r} is mapped twice (also labels[{seen[native]}])",
            )
        seen[native] = i
        raw_id = entry.get("marco_raw_id")
        if raw_id is not None:
            raw_id = _require_int(path, where + ".marco_raw_id", raw_id)
        labels.append(
            NativeLabel(
                native=native,
                class_name=class_name,
                marco_raw_id=raw_id,
                description=str(entry.get("description", "")),
            )
        )
    return tuple(labels)


def _parse_path_prefixes(path: Path, data: Any) -> tuple[tuple[str, str], ...]:
    """``path_prefixes``: absolute prefix -> folder below the data folder.

    Absolute paths in an export are read only when they lie inside the data folder
    or begin with one of these prefixes; the prefix is then replaced by the folder.
    """
    if data is None:
        return ()
    if not isinstance(data, Mapping) or not data:
        raise _err(path, "path_prefixes", "must map absolute path prefixes to folders of "
                   "the data folder, e.g. {'\\\\imager\\RockMakerStorage': images}")
    pairs: list[tuple[str, str]] = []
    for prefix, folder in data.items():
        key = f"path_prefixes.{prefix}"
        prefix = _require_str(path, key, prefix)
        folder = _require_str(path, key, folder)
        if not filesystem.is_absolute(prefix):
            raise _err(path, key, "the prefix must be absolute (/..., C:\\..., "
                       "\\\\server\\..., or a URL such as gs://bucket/...)")
        parts = folder.replace("\\", "/").strip("/").split("/")
        if filesystem.is_absolute(folder) or ".." in parts:
            raise _err(path, key, f"{folder!r} must be a folder inside the data folder, "
                       "relative to it, without '..'")
        pairs.append((prefix, "/".join(parts)))
    return tuple(pairs)


def parse_source(path: Path, data: Any) -> Source:
    """Build a :class:`Source` from one parsed YAML document, checking every key."""
    if not isinstance(data, Mapping):
        raise _err(path, "(top level)", "must be a mapping of keys such as code, name, labels")
    _check_keys(path, "", data, TOP_LEVEL_REQUIRED, TOP_LEVEL_OPTIONAL)
    code = _require_str(path, "code", data["code"])
    if not CODE_PATTERN.match(code):
        raise _err(path, "code", f"{code!r} must be 2-16 upper-case letters, digits or '_'")
    source_id = data.get("marco_source_id")
    if source_id is not None:
        source_id = _require_int(path, "marco_source_id", source_id)
    paper_images = data.get("paper_images")
    if paper_images is not None:
        paper_images = _require_int(path, "paper_images", paper_images)
    return Source(
        code=code,
        name=_require_str(path, "name", data["name"]),
        imager=_require_str(path, "imager", data["imager"]),
        setup=_require_str(path, "setup", data["setup"]),
        layout=_parse_layout(path, data["layout"]),
        labels=_parse_labels(path, data["labels"]),
        file=path,
        marco_source_id=source_id,
        paper_images=paper_images,
        imaging=_parse_imaging(path, data.get("imaging")),
        notes=str(data.get("notes", "")),
        path_prefixes=_parse_path_prefixes(path, data.get("path_prefixes")),
    )


def source_document(source: Source) -> dict[str, Any]:
    """The YAML mapping of ``source``, which :func:`parse_source` reads back as it is.

    Keys come in the order of the project's catalogue files. Optional keys that are
    unset are left out; an empty name, imager, setup or class is written as a blank
    (None), for a person to fill in.
    """
    imaging = dataclasses.asdict(source.imaging)
    imaging["formats"] = list(source.imaging.formats)
    layout = {"reader": source.layout.reader}
    for key, value in source.layout.options.items():
        layout[key] = list(value) if isinstance(value, tuple) else value
    labels = []
    for label in source.labels:
        entry: dict[str, Any] = {"native": label.native, "class": label.class_name or None}
        if label.marco_raw_id is not None:
            entry["marco_raw_id"] = label.marco_raw_id
        if label.description:
            entry["description"] = label.description
        labels.append(entry)
    document = {
        "code": source.code,
        "name": source.name or None,
        "imager": source.imager or None,
        "setup": source.setup or None,
        "paper_images": source.paper_images,
        "marco_source_id": source.marco_source_id,
        "imaging": imaging,
        "notes": source.notes or None,
        "path_prefixes": dict(source.path_prefixes) or None,
        "layout": layout,
        "labels": labels,
    }
    return {k: v for k, v in document.items() if v is not None or k in TOP_LEVEL_REQUIRED}


def load_source_file(path: Path) -> Source:
    """Load and check one institution file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path}: not valid YAML: {exc}") from exc
    return parse_source(path, data)


def overrides_path(folder: Path, code: str) -> Path:
    """Where the label overrides of institution ``code`` live in a catalogue folder."""
    return folder / OVERRIDES_DIR / f"{code}.csv"


def load_overrides(path: Path, code: str) -> dict[str, Override]:
    """Read one institution's overrides file: image id -> :class:`Override`.

    Every row must name this institution, an image id and a new class (one of MARCO's
    classes or ``dispute``). When one image has several rows, the last one wins, so a
    later review round can be appended to the file.

    Raises:
        CatalogueError: naming the file, line and column of the first bad row.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{path}: cannot read: {exc}") from exc
    reader = csv.DictReader(text.splitlines())
    header = tuple(reader.fieldnames or ())
    missing = [column for column in OVERRIDE_COLUMNS if column not in header]
    if missing:
        raise CatalogueError(
            f"{path}: line 1: the header lacks column(s) {missing}; expected "
            f"{','.join(OVERRIDE_COLUMNS)}"
        )
    overrides: dict[str, Override] = {}
    for row in reader:
        where = f"{path}: line {reader.line_num}"
        if None in row or any(row[c] is None for c in OVERRIDE_COLUMNS):
            raise CatalogueError(f"{where}: expected {len(header)} cells")
        values = {c: row[c].strip() for c in OVERRIDE_COLUMNS}
        if values["institution"] != code:
            raise CatalogueError(
                f"{where}: institution {values['institution']!r} is not {code!r}, the "
                f"institution this file belongs to"
            )
        if not values["image_id"]:
            raise CatalogueError(f"{where}: image_id is empty")
        if values["new_class"] not in OVERRIDE_CLASSES:
            raise CatalogueError(
                f"{where}: new_class {values['new_class']!r} is not one of {list(OVERRIDE_CLASSES)}"
            )
        overrides[values["image_id"]] = Override(**values, origin=f"{path.name}:{reader.line_num}")
    return overrides


def _with_overrides(source: Source, folder: Path) -> Source:
    path = overrides_path(folder, source.code)
    if not path.is_file():
        return source
    return dataclasses.replace(
        source, overrides=load_overrides(path, source.code), overrides_file=path
    )


CATALOGUE_PATTERNS = ("*.yaml", "*.yml")


def catalogue_files(catalogue_dir: str) -> list[str]:
    """The catalogue's institution files (local or on any file system), sorted."""
    found = []
    for pattern in CATALOGUE_PATTERNS:
        found.extend(filesystem.glob(filesystem.join(catalogue_dir, pattern)))
    return sorted(found)


@contextlib.contextmanager
def local_catalogue(catalogue_dir: str | None) -> Iterator[str | None]:
    """The catalogue folder as a local path: a remote one (gs://) is copied first,
    institution files and label overrides (``overrides/*.csv``), for as long as the
    ``with`` block runs. A local folder (or None) is given back as it is.
    """
    if catalogue_dir is None or not filesystem.is_remote(str(catalogue_dir)):
        yield catalogue_dir
        return
    with tempfile.TemporaryDirectory(prefix="marco-catalogue-") as folder:
        overrides = filesystem.glob(filesystem.join(catalogue_dir, f"{OVERRIDES_DIR}/*.csv"))
        if overrides:
            os.makedirs(os.path.join(folder, OVERRIDES_DIR))
        for path in catalogue_files(catalogue_dir):
            _copy_to(path, os.path.join(folder, filesystem.name(path)))
        for path in overrides:
            _copy_to(path, os.path.join(folder, OVERRIDES_DIR, filesystem.name(path)))
        yield folder


def _copy_to(path: str, target: str) -> None:
    with open(target, "wb") as handle:
        handle.write(filesystem.read_bytes(path))


def load_catalogue(directory: Path | str | None = None) -> Catalogue:
    """Load every ``*.yaml`` file of a catalogue folder (default ``schemas/sources``),
    with each institution's label overrides (``overrides/<CODE>.csv``), if any.

    The folder may be on an object store (``gs://``, read through a local copy:
    Transform and the schema generator read the catalogue inside Vertex AI's
    containers); errors then name the files at their remote paths.

    Raises:
        CatalogueError: naming the file and key of the first problem found, including
            problems across files (duplicate codes or published MARCO ids).
    """
    if directory is not None and filesystem.is_remote(str(directory)):
        remote = str(directory).rstrip("/")
        with local_catalogue(remote) as folder:
            try:
                return _load_catalogue(Path(folder))
            except CatalogueError as exc:
                raise CatalogueError(str(exc).replace(folder, remote)) from None
    return _load_catalogue(Path(directory) if directory is not None else SOURCES_DIR)


def _load_catalogue(folder: Path) -> Catalogue:
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not files:
        raise CatalogueError(f"{folder}: no institution files (*.yaml) found")
    sources = [load_source_file(f) for f in files]
    codes: dict[str, Path] = {}
    known = {source.code for source in sources}
    for stray in sorted((folder / OVERRIDES_DIR).glob("*.csv")):
        if stray.stem not in known:
            raise CatalogueError(
                f"{stray}: overrides of {stray.stem!r}, which is not an institution of the "
                f"catalogue (known: {sorted(known)})"
            )
    sources = [_with_overrides(source, folder) for source in sources]
    source_ids: dict[int, Path] = {}
    raw_ids: dict[int, tuple[Path, str]] = {}
    for source in sources:
        if source.code in codes:
            raise _err(
                source.file, "code", f"duplicate institution code {source.code!r} "
                f"(also in {codes[source.code]})"
            )
        codes[source.code] = source.file
        if source.marco_source_id is not None:
            if source.marco_source_id in source_ids:
                raise _err(
                    source.file,
                    "marco_source_id",
                    f"{source.marco_source_id} also used by {source_ids[source.marco_source_id]}",
                )
            source_ids[source.marco_source_id] = source.file
        for i, label in enumerate(source.labels):
            if label.marco_raw_id is None:
                continue
            if label.marco_raw_id in raw_ids:
                other_file, other_label = raw_ids[label.marco_raw_id]
                raise _err(
                    source.file,
                    f"labels[{i}].marco_raw_id",
                    f"{label.marco_raw_id} also used by {other_label!r} in {other_file}",
                )
            raw_ids[label.marco_raw_id] = (source.file, label.native)
    sources.sort(key=lambda s: (s.marco_source_id is None, s.marco_source_id or 0, s.code))
    return Catalogue(sources=tuple(sources))
