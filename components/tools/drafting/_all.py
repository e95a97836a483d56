"""Drafts the catalogue file of a new institution from its files (``marco sources add``).

A new lab sends a folder of drop images and, usually, some record of what each image
shows. This module looks at that folder, decides which of the three layout readers
fits (a delimited manifest, a JSON-lines export or one folder per label), works out
which column or key holds the image path, the label and the optional image id, plate,
well and imaging time, reads every record with the real reader to count the native
labels, and writes ``CODE.yaml`` with each label's class left empty. Classes are never
filled in here: the words a lab uses ("ppt", "xtal", "5") mean what its scoring guide
says, so a person decides, helped by a suggestion written as a comment.
"""

from __future__ import annotations

import csv
import glob
import os
import re
import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from PIL import Image, UnidentifiedImageError

from components.catalogue import (
    CODE_PATTERN,
    RECORD_FIELDS,
    CatalogueError,
    Imaging,
    Layout,
    NativeLabel,
    Source,
    load_source_file,
    parse_source,
    source_document,
)
from components.imagecheck import EXAMPLE_FORMATS, KNOWN_FORMATS, extensions, format_names
from components.names import CLASS_IDS, CLASS_NAMES
from components.readers import BadRecord, flatten, json_lines, read_source
from schemas import SOURCES_DIR

IMAGE_EXTENSIONS = extensions(EXAMPLE_FORMATS)  # what ingestion can read
# Images it cannot: noted, and never chosen as a layout's extensions.
OTHER_IMAGE_EXTENSIONS = tuple(e for e in extensions(KNOWN_FORMATS) if e not in IMAGE_EXTENSIONS)
INGESTED_FORMATS = format_names(EXAMPLE_FORMATS)
_INGESTED = ", ".join(f.pil_name for f in EXAMPLE_FORMATS)
_IMAGE_NAMES = ", ".join(f".{e}" for e in IMAGE_EXTENSIONS)
TABLE_EXTENSIONS = ("csv", "tsv", "tab", "txt")
JSONL_EXTENSIONS = ("jsonl", "ndjson", "json")
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
SAMPLE_RECORDS = 2000  # records profiled to recognise column roles
SAMPLE_PATHS = 200  # image paths tried when looking for the image root
SAMPLE_IMAGES = 24  # images opened to describe the imager's output
MAX_LABEL_VALUES = 200  # more distinct values than this is not a label vocabulary
MAX_LABEL_FOLDERS = 100
EXAMPLES_PER_LABEL = 3
ROLE_SHARE = 0.9  # share of values that must look like a role's values

# Words in a column name or JSON key that suggest its role.
ROLE_HINTS: dict[str, frozenset[str]] = {
    "path": frozenset({"file", "filename", "image", "img", "path", "filepath", "location",
                       "picture", "photo", "url", "uri", "imagefile", "imagepath"}),
    "label": frozenset({"label", "class", "score", "result", "outcome", "observation",
                        "category", "call", "annotation", "verdict", "rating", "tag",
                        "classification", "obs", "grade", "scoring"}),
    "image_id": frozenset({"id", "uid", "uuid", "guid", "identifier", "key", "imageid"}),
    "plate": frozenset({"plate", "barcode", "tray", "platebarcode", "plateid"}),
    "well": frozenset({"well", "drop", "position", "pos", "subwell", "wellposition"}),
    "imaged_at": frozenset({"date", "time", "imaged", "timestamp", "taken", "datetime",
                            "acquired", "captured", "when", "inspection", "inspected"}),
}

_DATE = re.compile(
    r"^(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})"
    r"(?:[ T_-]?\d{2}:?\d{2}(?::?\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)
_DMY = re.compile(r"^\d{1,2}[/.]\d{1,2}[/.]\d{2,4}(?: \d{1,2}:\d{2}(?::\d{2})?)?$")
_WELL = re.compile(r"^[A-Pa-p]\s*0?(?P<n>\d{1,2})(?:[._-]\d)?$")
_NUMERIC = re.compile(r"^-?\d+(?:\.\d+)?$")
_TOKEN = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Words that suggest a class; a label containing words of several classes gets the
# first class of CLASS_PRECEDENCE (crystals win, as in CSIRO's 'crystals + precipitate'
# and HWMRI's 'precipitate_and_crystal'; precipitate beats other, as in CSIRO's
# 'phase separation + precipitate').
CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "crystals": ("xtal", "crystal", "cryst", "needle", "spherul", "urchin", "prism", "rods",
                 "xl", "xls", "xtl"),
    "precipitate": ("ppt", "precip", "prec", "amorph", "granul", "aggreg", "skin"),
    "other": ("phase", "separat", "oil", "bad", "fail", "dry", "unclass", "unknown", "dust",
              "fibre", "fiber", "bubble", "other", "junk", "artefact", "artifact", "error",
              "ps", "lps", "misc"),
    "clear": ("clear", "empty", "clean", "transparent", "blank", "none", "nothing"),
}
CLASS_PRECEDENCE = ("crystals", "precipitate", "other", "clear")
OTHER_PHRASES = ("no drop", "nodrop", "missing drop", "no image")
NEGATIONS = frozenset({"no", "not", "non", "without"})
SUBSTRING_MIN = 4  # shorter class words must match a whole word


class DraftError(ValueError):
    """The folder fits no layout, or the draft cannot be written; the message says why."""


@dataclass(frozen=True)
class Suggestion:
    """A class a label's words point to, and why; shown as a comment, never filled in."""

    class_name: str | None
    reason: str


@dataclass
class Detection:
    """What was found in a new institution's folder."""

    reader: str
    # Layout options exactly as the catalogue file states them (paths relative to the
    # data root, the folder the pipeline's data_dir points at).
    options: dict[str, Any]
    described_from: str  # the manifest, export or root folder that was recognised
    records: int = 0
    files_found: int = 0
    labels: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    bad_records: Counter = field(default_factory=Counter)
    bad_examples: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    imaging: dict[str, Any] | None = None
    images_sampled: int = 0

    @property
    def record_fields(self) -> dict[str, str]:
        return dict(Layout(self.reader, self.options).record_fields)


@dataclass
class Draft:
    """A drafted catalogue file: the detection, the suggestions and the YAML text."""

    code: str
    path: Path
    data_root: Path
    detection: Detection
    suggestions: dict[str, Suggestion]
    text: str
    missing: list[str]  # top-level keys left for the engineer


# --------------------------------------------------------------------------- values


def _tokens(name: str) -> list[str]:
    return _TOKEN.findall(_CAMEL.sub(" ", name).lower())


def role_hints(name: str) -> set[str]:
    """Roles a column name or dotted JSON key suggests (``"Plate Barcode"`` -> plate).

    The last part of a dotted key speaks first (``plate.well`` is a well); when it says
    nothing, the earlier parts are asked (``score.text`` is a label).
    """
    parts = name.split(".")
    for tokens in (_tokens(parts[-1]), _tokens(name)):
        whole = "".join(tokens)
        found = {
            role for role, words in ROLE_HINTS.items()
            if whole in words or any(t in words for t in tokens)
        }
        if found:
            return found
    return set()


def looks_like_date(value: str) -> bool:
    match = _DATE.match(value)
    if match:
        y, m, d = (int(match[k]) for k in ("y", "m", "d"))
        return 1900 <= y <= 2100 and 1 <= m <= 12 and 1 <= d <= 31
    return bool(_DMY.match(value))


def looks_like_well(value: str) -> bool:
    match = _WELL.match(value)
    return bool(match) and 1 <= int(match["n"]) <= 48


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _is_image_name(value: str) -> bool:
    return _extension(value.strip()) in IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS


def _share(values: Sequence[str], test) -> float:
    return sum(1 for v in values if test(v)) / len(values) if values else 0.0


@dataclass
class _Column:
    """Sampled values of one manifest column or JSON key, and what they look like."""

    name: str
    values: list[str]
    rows: int

    @property
    def filled(self) -> list[str]:
        return [v for v in self.values if v]

    @property
    def fill(self) -> float:
        return len(self.filled) / self.rows if self.rows else 0.0

    @property
    def distinct(self) -> int:
        return len(set(self.filled))

    @property
    def unique(self) -> bool:
        return len(self.filled) > 1 and self.distinct == len(self.filled)

    def share(self, test) -> float:
        return _share(self.filled, test)


def _profile(names: Sequence[str], rows: Sequence[Mapping[str, str]]) -> list[_Column]:
    return [
        _Column(name, [(row.get(name) or "").strip() for row in rows], len(rows))
        for name in names
    ]


# --------------------------------------------------------------------------- roles


def _pick(
    columns: Sequence[_Column], role: str, forced: str | None, kind: str
) -> _Column | None:
    if forced is None:
        return None
    for column in columns:
        if column.name == forced:
            return column
    have = ", ".join(repr(c.name) for c in columns)
    raise DraftError(f"--{role}-column {forced!r} is not a {kind} of the records (have {have})")


def assign_roles(
    columns: Sequence[_Column],
    *,
    label_column: str | None = None,
    path_column: str | None = None,
    kind: str = "column",
) -> tuple[dict[str, str], list[str], list[str]]:
    """Decide which column plays which record role.

    Returns:
        (role -> column name, columns left unused, notes on doubtful choices).

    Raises:
        DraftError: when no column holds image file names or none looks like a label,
            saying what was found instead.
    """
    roles: dict[str, _Column] = {}
    notes: list[str] = []
    forced_path = _pick(columns, "path", path_column, kind)
    forced_label = _pick(columns, "label", label_column, kind)
    if forced_path:
        roles["path"] = forced_path
    if forced_label:
        roles["label"] = forced_label

    def free() -> list[_Column]:
        used = {id(c) for c in roles.values()}
        return [c for c in columns if id(c) not in used and c.filled]

    def best(candidates: list[_Column], role: str, score) -> _Column | None:
        if not candidates:
            return None
        return max(candidates, key=lambda c: (role in role_hints(c.name), score(c)))

    if "path" not in roles:
        image_like = [c for c in free() if c.share(_is_image_name) >= 0.8]
        chosen = best(image_like, "path", lambda c: c.share(_is_image_name))
        if chosen is None:
            raise DraftError(
                f"no {kind} holds image file names ({_IMAGE_NAMES}); "
                f"{kind}s: {', '.join(repr(c.name) for c in columns)}"
            )
        roles["path"] = chosen
    def named_label(c: _Column, role: str) -> bool:
        """A column named like a label keeps its values for the label, whatever they are."""
        hints = role_hints(c.name)
        return "label" in hints and role not in hints

    dated = [
        c for c in free()
        if c.share(looks_like_date) >= ROLE_SHARE and not named_label(c, "imaged_at")
    ]
    if chosen := best(dated, "imaged_at", lambda c: c.share(looks_like_date)):
        roles["imaged_at"] = chosen
    wells = [
        c for c in free()
        if not named_label(c, "well") and (
            c.share(looks_like_well) >= ROLE_SHARE
            or ("well" in role_hints(c.name) and c.share(str.isdigit) >= ROLE_SHARE)
        )
    ]
    if chosen := best(wells, "well", lambda c: c.share(looks_like_well)):
        roles["well"] = chosen
    for column in free():
        if "image_id" in role_hints(column.name) and "plate" not in role_hints(column.name):
            if column.unique and column.fill >= 0.999:
                roles["image_id"] = column
                break
            notes.append(
                f"{kind} {column.name!r} looks like an id but is not unique or not always "
                "filled; image ids are derived from the image paths instead"
            )
    if "label" not in roles:
        candidates = [
            c for c in free()
            if c.fill >= ROLE_SHARE
            and c.distinct <= MAX_LABEL_VALUES
            and not (c.unique and len(c.filled) >= 20)
            and c.share(looks_like_date) < 0.5
        ]

        def label_score(c: _Column) -> float:
            hints = role_hints(c.name)
            return (
                2.0 * ("label" in hints)
                - 2.0 * bool(hints - {"label"})
                + (1.0 - c.distinct / max(1, len(c.filled)))
            )

        ranked = sorted(candidates, key=label_score, reverse=True)
        if not ranked:
            raise DraftError(
                f"no {kind} looks like a label (a few distinct values, filled on every "
                f"record); {kind}s: {', '.join(repr(c.name) for c in columns)}; "
                f"name the label {kind} with --label-column"
            )
        roles["label"] = ranked[0]
        others = [c for c in ranked[1:] if label_score(c) > 0]
        if others:
            notes.append(
                "other possible label " + kind + "s: "
                + ", ".join(f"{c.name!r} ({c.distinct} distinct values)" for c in others)
                + "; choose one with --label-column"
            )
    plates = [c for c in free() if "plate" in role_hints(c.name)]
    if plates:
        roles["plate"] = plates[0]
    mapping = {role: roles[role].name for role in RECORD_FIELDS if role in roles}
    ignored = [c.name for c in columns if c.name not in mapping.values()]
    return mapping, ignored, notes


# --------------------------------------------------------------------------- path patterns


def _split_path(relative: str) -> list[list[str]]:
    stem = relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative
    return [segment.split("_") for segment in stem.split("/")]


def detect_path_pattern(paths: Sequence[str], wanted: Iterable[str]) -> str | None:
    """A ``path_pattern`` reading the ``wanted`` groups (plate, well, imaged_at) from paths.

    Paths are cut at ``/`` and ``_``; when most paths have the same shape, a position
    whose values are all wells, dates or repeated plate-like codes becomes a named
    group. The pattern is kept only when it reads the same values back from the paths.
    """
    wanted = set(wanted)
    if not paths or not wanted:
        return None
    split = [_split_path(p.replace(os.sep, "/")) for p in paths]
    shapes = Counter(tuple(len(s) for s in parts) for parts in split)
    shape, count = shapes.most_common(1)[0]
    if count < 0.95 * len(split):
        return None
    same = [parts for parts in split if tuple(len(s) for s in parts) == shape]
    positions = [(i, j) for i, n in enumerate(shape) for j in range(n)]
    values = {pos: [parts[pos[0]][pos[1]] for parts in same] for pos in positions}
    named: dict[tuple[int, int], str] = {}
    classes: dict[str, str] = {}
    if "well" in wanted:
        # Plate codes such as 'P1' look like wells too: wells vary the most, and come last.
        lettered = [p for p in positions if _share(values[p], looks_like_well) == 1.0]
        numbered = [
            p for p in positions
            if all(len(v) == 4 and v.isdigit() and 1 <= int(v) <= 1536 for v in values[p])
        ]
        for candidates, regex in ((lettered, r"[A-Pa-p]\d{1,2}"), (numbered, r"\d{4}")):
            if candidates:
                pos = max(candidates, key=lambda p: (len(set(values[p])), p))
                named[pos], classes["well"] = "well", regex
                break
    if "imaged_at" in wanted:
        for pos in positions:
            if pos not in named and _share(values[pos], looks_like_date) == 1.0:
                named[pos], classes["imaged_at"] = "imaged_at", r"[^/_]+"
                break
    if "plate" in wanted:
        well_pos = next((p for p, n in named.items() if n == "well"), None)
        for pos in sorted(positions, key=lambda p: (well_pos is not None and p > well_pos, p)):
            vals = values[pos]
            if pos in named or (len(set(vals)) == len(vals) and len(vals) > 1):
                continue
            if all(re.fullmatch(r"[A-Za-z0-9-]*\d[A-Za-z0-9-]*", v) for v in vals) and not any(
                looks_like_date(v) for v in vals
            ):
                named[pos], classes["plate"] = "plate", r"[^/_]+"
                break
    if not named:
        return None
    last = max(named)
    parts = []
    for i, n in enumerate(shape):
        if i > last[0]:
            break
        tokens = []
        for j in range(n):
            if (i, j) > last:
                break
            name = named.get((i, j))
            tokens.append(f"(?P<{name}>{classes[name]})" if name else r"[^/_]+")
        parts.append("_".join(tokens))
    tail = "/" if last[1] == shape[last[0]] - 1 and last[0] < len(shape) - 1 else (
        r"\." if last[1] == shape[last[0]] - 1 else "_"
    )
    pattern = "^" + "/".join(parts) + tail
    regex = re.compile(pattern)
    for path, parts_of in zip(paths, split, strict=True):
        if tuple(len(s) for s in parts_of) != shape:
            continue
        match = regex.search(path.replace(os.sep, "/"))
        if not match:
            return None
        for pos, name in named.items():
            if match[name] != parts_of[pos[0]][pos[1]]:
                return None
    return pattern


# --------------------------------------------------------------------------- files


def _posix(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """(record-like files, image files) below ``folder``, sorted."""
    records, images = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            ext = _extension(name)
            if ext in TABLE_EXTENSIONS + JSONL_EXTENSIONS:
                records.append(Path(dirpath) / name)
            elif ext in IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS:
                images.append(Path(dirpath) / name)
    return records, images


def _group_glob(files: Sequence[Path]) -> str:
    """A glob (file name part) matching exactly ``files`` of one folder, or ''."""
    names = [f.name for f in files]
    if len(names) == 1:
        return glob.escape(names[0])
    prefix = os.path.commonprefix(names)
    suffix = os.path.commonprefix([n[::-1] for n in names])[::-1]
    suffix = suffix[max(0, len(prefix) + len(suffix) - min(len(n) for n in names)):]
    pattern = glob.escape(prefix) + "*" + glob.escape(suffix)
    matched = sorted(Path(p) for p in glob.glob(str(files[0].parent / pattern)))
    return pattern if matched == sorted(files) else ""


def sniff_delimiter(lines: Sequence[str]) -> str | None:
    """The delimiter that splits the header and the next lines into the same 2+ cells."""
    best: tuple[int, int, str] | None = None
    for rank, delimiter in enumerate(DELIMITERS):
        rows = list(csv.reader(lines, delimiter=delimiter))
        rows = [r for r in rows if r]
        if not rows or len(rows[0]) < 2:
            continue
        if any(len(r) != len(rows[0]) for r in rows[1:]):
            continue
        key = (len(rows[0]), -rank, delimiter)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None


@dataclass
class _Candidate:
    """One record file (or group of them) that could be the institution's records."""

    reader: str
    files: list[Path]
    pattern: str  # relative to the data root
    rows: list[dict[str, str]]
    names: list[str]
    delimiter: str | None = None
    notes: list[str] = field(default_factory=list)


def _read_table(files: Sequence[Path]) -> tuple[str | None, list[str], list[dict[str, str]]]:
    with open(files[0], newline="", encoding="utf-8-sig") as handle:
        head = [line for _, line in zip(range(50), handle, strict=False)]
    delimiter = sniff_delimiter(head)
    if delimiter is None:
        return None, [], []
    rows: list[dict[str, str]] = []
    header: list[str] = []
    for path in files:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = header or list(reader.fieldnames or [])
            for row in reader:
                rows.append({k: v for k, v in row.items() if isinstance(k, str)})
                if len(rows) >= SAMPLE_RECORDS:
                    return delimiter, header, rows
    return delimiter, header, rows


def _read_jsonl(files: Sequence[Path]) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """(dotted keys, rows of flattened records, notes) from JSON-lines files."""
    rows: list[dict[str, str]] = []
    names: dict[str, None] = {}
    notes: list[str] = []
    bad = 0
    for path in files:
        with open(path, encoding="utf-8") as handle:
            if handle.read(4096).lstrip().startswith("["):
                bad += 1
                notes.append(f"{path.name} is one JSON document, not JSON lines")
                continue
            handle.seek(0)
            for _, obj, _ in json_lines(handle):
                if obj is None:
                    bad += 1
                    continue
                flat = flatten(obj)
                names.update(dict.fromkeys(flat))
                rows.append(flat)
                if len(rows) >= SAMPLE_RECORDS:
                    return list(names), rows, notes
    if bad and bad >= len(rows):
        return [], [], notes
    return list(names), rows, notes


def _record_candidates(record_files: Sequence[Path], data_root: Path) -> list[_Candidate]:
    groups: dict[tuple, list[Path]] = {}
    for path in record_files:
        ext = _extension(path.name)
        kind = "jsonl" if ext in JSONL_EXTENSIONS else "csv_manifest"
        if kind == "csv_manifest":
            try:
                with open(path, newline="", encoding="utf-8-sig") as handle:
                    head = handle.readline()
            except (OSError, UnicodeDecodeError):
                continue
            groups.setdefault((kind, path.parent, ext, head.strip()), []).append(path)
        else:
            groups.setdefault((kind, path.parent, ext), []).append(path)
    candidates = []
    for key, files in groups.items():
        kind = key[0]
        name_glob = _group_glob(files)
        notes = []
        if not name_glob:
            files = [max(files, key=lambda p: p.stat().st_size)]
            name_glob = glob.escape(files[0].name)
            notes.append(f"several record files in {files[0].parent}; only {files[0].name} "
                         "is described, edit the pattern to read more")
        pattern = _posix(files[0].parent / name_glob, data_root)
        try:
            if kind == "csv_manifest":
                delimiter, names, rows = _read_table(files)
                candidate = _Candidate(kind, files, pattern, rows, names, delimiter, notes)
            else:
                names, rows, more = _read_jsonl(files)
                candidate = _Candidate(kind, files, pattern, rows, names, None, notes + more)
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if candidate.rows and len(candidate.names) >= 2:
            candidates.append(candidate)
    return candidates


def _image_root(values: Sequence[str], manifest_dir: Path, folder: Path, data_root: Path
                ) -> tuple[Path, int, int]:
    """The folder the manifest's image paths resolve from: (folder, found, tried)."""
    sample = [v for v in values if v][:SAMPLE_PATHS]
    roots = [manifest_dir, folder]
    for dirpath, dirnames, _ in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        depth = len(Path(dirpath).relative_to(folder).parts)
        if depth >= 2:
            dirnames[:] = []
        roots.extend(Path(dirpath) / d for d in dirnames)
        if len(roots) > 60:
            break
    roots.append(data_root)
    best = (manifest_dir, -1)
    for root in dict.fromkeys(roots):
        found = sum(1 for v in sample if (root / v).is_file())
        if found > best[1]:
            best = (root, found)
    return best[0], max(best[1], 0), len(sample)


# --------------------------------------------------------------------------- detection


def _manifest_detection(
    candidate: _Candidate,
    folder: Path,
    data_root: Path,
    label_column: str | None,
    path_column: str | None,
) -> tuple[Detection, float]:
    kind = "column" if candidate.reader == "csv_manifest" else "key"
    columns = _profile(candidate.names, candidate.rows)
    mapping, ignored, notes = assign_roles(
        columns, label_column=label_column, path_column=path_column, kind=kind
    )
    paths = [row.get(mapping["path"], "").strip() for row in candidate.rows]
    root, found, tried = _image_root(paths, candidate.files[0].parent, folder, data_root)
    options: dict[str, Any] = {}
    if candidate.reader == "csv_manifest":
        options["manifest"] = candidate.pattern
        options["image_root"] = _posix(root, data_root)
        if candidate.delimiter != ",":
            options["delimiter"] = candidate.delimiter
        options["columns"] = mapping
    else:
        options["files"] = candidate.pattern
        options["image_root"] = _posix(root, data_root)
        options["fields"] = mapping
    wanted = [r for r in ("plate", "well", "imaged_at") if r not in mapping]
    pattern = detect_path_pattern([p for p in paths if p][:SAMPLE_RECORDS], wanted)
    if pattern:
        options["path_pattern"] = pattern
    detection = Detection(
        reader=candidate.reader,
        options=options,
        described_from=candidate.pattern,
        ignored=ignored,
        notes=candidate.notes + notes,
    )
    if tried and found < tried:
        detection.notes.append(
            f"only {found} of the first {tried} image paths exist under {options['image_root']}"
        )
    return detection, (found / tried if tried else 0.0)


def _label_root(folder: Path) -> Path:
    """Descend through folders that hold nothing but one folder (e.g. ``images/``)."""
    root = folder
    for _ in range(3):
        children = [p for p in root.iterdir() if not p.name.startswith(".")]
        dirs = [p for p in children if p.is_dir()]
        if len(dirs) == 1 and not any(p.is_file() and _is_image_name(p.name) for p in children):
            root = dirs[0]
        else:
            break
    return root


def _folder_detection(folder: Path, data_root: Path, images: Sequence[Path]) -> Detection:
    root = _label_root(folder)
    by_label: dict[str, list[Path]] = {}
    loose = 0
    for image in images:
        if not image.is_relative_to(root):
            continue
        parts = image.relative_to(root).parts
        if len(parts) == 1:
            loose += 1
        else:
            by_label.setdefault(parts[0], []).append(Path(*parts[1:]))
    if not by_label:
        raise DraftError(
            f"{folder}: found {len(images)} images but no record file (CSV/TSV manifest or "
            "JSON lines) that names them, and no folders of images to read as labels"
        )
    if len(by_label) > MAX_LABEL_FOLDERS:
        raise DraftError(
            f"{root} has {len(by_label)} folders of images: too many for one folder per "
            "label (plates or dates, perhaps); add a manifest naming each image's label"
        )
    readable = [
        rel for label in sorted(by_label) for rel in by_label[label]
        if _extension(rel.name) in IMAGE_EXTENSIONS
    ]
    extensions = [ext for ext, _ in Counter(_extension(r.name) for r in readable).most_common()]
    options: dict[str, Any] = {
        "root": _posix(root, data_root),
        "extensions": extensions or list(IMAGE_EXTENSIONS),
    }
    relative = [r.as_posix() for r in readable[:SAMPLE_RECORDS]]
    pattern = detect_path_pattern(relative, ("plate", "well", "imaged_at"))
    if pattern:
        options["path_pattern"] = pattern
    detection = Detection(reader="folder_per_label", options=options,
                          described_from=options["root"])
    if loose:
        detection.notes.append(
            f"{loose} images lie directly in {options['root']}, outside any label folder; "
            "they are not read"
        )
    return detection


def _sample_imaging(paths: Sequence[str]) -> tuple[dict[str, Any] | None, int, list[str]]:
    if not paths:
        return None, 0, []
    step = max(1, len(paths) // SAMPLE_IMAGES)
    formats: Counter = Counter()
    sizes: Counter = Counter()
    colours: set[str] = set()
    notes = []
    opened = 0
    for path in list(paths)[::step][:SAMPLE_IMAGES]:
        try:
            with Image.open(path) as image:
                fmt = (image.format or "").lower()
                sizes[image.size] += 1
                colours.add("grey" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "rgb")
        except (OSError, UnidentifiedImageError):
            continue
        opened += 1
        if fmt in INGESTED_FORMATS:
            formats[fmt] += 1
        else:
            notes.append(f"{path}: {fmt or 'unknown'} images cannot be ingested ({_INGESTED} only)")
    if not opened:
        return None, 0, notes
    (width, height), _ = sizes.most_common(1)[0]
    imaging = {
        "colour": "mixed" if len(colours) > 1 else colours.pop(),
        "width": max(16, width),
        "height": max(16, height),
        "formats": [f for f, _ in formats.most_common()] or list(Imaging().formats),
    }
    return imaging, opened, notes[:3]


def inspect_institution(
    folder: Path | str,
    data_root: Path | str | None = None,
    *,
    code: str = "NEW",
    label_column: str | None = None,
    path_column: str | None = None,
) -> Detection:
    """Recognise the layout of a new institution's folder and read every record.

    Args:
        folder: the institution's files.
        data_root: the folder the catalogue's paths start from (the pipeline's
            ``data_dir``); default: the parent of ``folder``.
        code: the institution code (it prefixes derived image ids).
        label_column: the column or dotted key holding the label, when the guess
            would be wrong.
        path_column: the column or dotted key holding the image path.

    Raises:
        DraftError: when no layout fits, naming what was found.
    """
    folder = Path(folder).resolve()
    data_root = Path(data_root).resolve() if data_root is not None else folder.parent
    if not folder.is_dir():
        raise DraftError(f"{folder} is not a folder")
    if folder != data_root and not folder.is_relative_to(data_root):
        raise DraftError(f"{folder} is not inside the data root {data_root}")
    record_files, images = _walk(folder)
    if not images:
        raise DraftError(f"{folder}: no image files ({_IMAGE_NAMES}) found")
    detection: Detection | None = None
    rejected: list[str] = []
    scored: list[tuple[float, int, Detection]] = []
    for candidate in _record_candidates(record_files, data_root):
        try:
            found, share = _manifest_detection(
                candidate, folder, data_root, label_column, path_column
            )
        except DraftError as exc:
            rejected.append(f"{candidate.pattern}: {exc}")
            continue
        scored.append((share, len(candidate.rows), found))
    if scored:
        scored.sort(key=lambda s: (s[0] >= 0.5, s[1], s[0]), reverse=True)
        share, _, detection = scored[0]
        for _, _, other in scored[1:]:
            detection.alternatives.append(f"{other.reader} {other.described_from}")
        if share < 0.5 and label_column is None and path_column is None:
            try:
                detection = _folder_detection(folder, data_root, images)
                detection.notes.append(
                    f"record file {scored[0][2].described_from} names images that do not "
                    "exist; reading one folder per label instead"
                )
            except DraftError:
                pass
    if detection is None:
        if label_column or path_column:
            raise DraftError(
                "--label-column and --path-column apply to a manifest or JSON-lines "
                f"export, and none fits in {folder}"
                + (": " + "; ".join(rejected) if rejected else "")
            )
        try:
            detection = _folder_detection(folder, data_root, images)
        except DraftError as exc:
            if rejected:
                raise DraftError(f"{exc}; record files considered: {'; '.join(rejected)}") from None
            raise
        detection.alternatives.extend(f"not a manifest: {r}" for r in rejected)
    unreadable = Counter(
        _extension(i.name) for i in images if _extension(i.name) in OTHER_IMAGE_EXTENSIONS
    )
    for ext, n in sorted(unreadable.items()):
        detection.notes.append(f"{n} .{ext} files: ingestion reads {_INGESTED} only")
    _count_records(detection, code, data_root)
    return detection


def _count_records(detection: Detection, code: str, data_root: Path) -> None:
    """Read every record with the real reader: label counts, examples, files found."""
    source = _draft_source(code, detection, name=code)
    existing: list[str] = []
    for item in read_source(source, data_root):
        if isinstance(item, BadRecord):
            detection.bad_records[item.reason] += 1
            if len(detection.bad_examples) < 3:
                detection.bad_examples.append(f"{item.origin}: {item.detail}")
            continue
        detection.records += 1
        detection.labels[item.native_label] += 1
        examples = detection.examples.setdefault(item.native_label, [])
        if len(examples) < EXAMPLES_PER_LABEL:
            examples.append(_posix(Path(item.path), data_root))
        if os.path.isfile(item.path):
            detection.files_found += 1
            existing.append(item.path)
    if not detection.records:
        raise DraftError(
            f"{detection.reader} {detection.described_from}: no readable record"
            + (f" ({'; '.join(detection.bad_examples)})" if detection.bad_examples else "")
        )
    imaging, opened, notes = _sample_imaging(existing)
    detection.imaging, detection.images_sampled = imaging, opened
    detection.notes.extend(notes)


# --------------------------------------------------------------------------- suggestions


def known_labels(catalogue_dir: Path | str) -> dict[str, list[tuple[str, str]]]:
    """Native label (lower case) -> [(institution, class)] over a catalogue folder.

    Read leniently, file by file: a draft still being filled in, or a broken file, is
    skipped rather than stopping ``marco sources add``.
    """
    known: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(Path(catalogue_dir).glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(data, Mapping) or not isinstance(data.get("labels"), list):
            continue
        code = str(data.get("code") or path.stem)
        for entry in data["labels"]:
            if isinstance(entry, Mapping) and entry.get("class") in CLASS_IDS:
                native = str(entry.get("native", "")).strip().lower()
                known.setdefault(native, []).append((code, str(entry["class"])))
    return known


def _word_classes(native: str) -> tuple[list[str], list[str]]:
    """Classes whose words occur in ``native``, and the words that matched."""
    text = native.lower().replace("_", " ")
    tokens = _TOKEN.findall(text)
    kept = [t for i, t in enumerate(tokens) if not (i and tokens[i - 1] in NEGATIONS)]
    kept = [t for t in kept if t not in NEGATIONS]
    joined = "".join(kept)
    found: list[str] = []
    words: list[str] = []
    for class_name in CLASS_PRECEDENCE:
        for word in CLASS_WORDS[class_name]:
            hit = word in joined if len(word) >= SUBSTRING_MIN else word in kept
            if hit:
                found.append(class_name)
                words.append(word)
                break
    return found, words


def suggest_class(
    native: str, known: Mapping[str, list[tuple[str, str]]] | None = None
) -> Suggestion | None:
    """A class suggested by a label's words or by other institutions' use of the word.

    Returns None when nothing points anywhere. A purely numeric label only gets a
    reminder that scores are lab-specific.
    """
    text = native.strip()
    if _NUMERIC.match(text):
        return Suggestion(None, "a numeric score: its meaning is the lab's own scoring scheme")
    lowered = text.lower()
    if any(phrase in lowered.replace("_", " ") for phrase in OTHER_PHRASES):
        return Suggestion("other", "no drop or no image is MARCO's 'other'")
    uses = (known or {}).get(lowered, [])
    if uses:
        by_class: dict[str, list[str]] = {}
        for code, class_name in uses:
            by_class.setdefault(class_name, []).append(code)
        chosen = max(by_class, key=lambda c: (len(by_class[c]), -CLASS_IDS[c]))
        where = "; ".join(f"{c} at {', '.join(codes)}" for c, codes in by_class.items())
        return Suggestion(chosen, f"the same word is {where}")
    found, words = _word_classes(text)
    if not found:
        return None
    if len(found) == 1:
        return Suggestion(found[0], f"the word {words[0]!r}")
    parts = ", ".join(f"{c} ({w!r})" for c, w in zip(found, words, strict=True))
    return Suggestion(
        found[0],
        f"a combined label: {parts}; MARCO gives a combined label the first of "
        f"{' > '.join(CLASS_PRECEDENCE)}",
    )


# --------------------------------------------------------------------------- the draft


class _DraftDumper(yaml.SafeDumper):
    """Safe YAML as the catalogue files are written: list items indented, blanks empty."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


_DraftDumper.add_representer(
    type(None), lambda dumper, _: dumper.represent_scalar("tag:yaml.org,2002:null", "")
)


def _yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_DraftDumper, sort_keys=False, allow_unicode=True,
                     width=1 << 16)


def _comment(text: str) -> str:
    """Text safe inside a one-line YAML comment."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _label_order(labels: Counter) -> list[str]:
    return sorted(labels, key=lambda n: (-labels[n], n))


def _draft_source(
    code: str,
    detection: Detection,
    labels: Iterable[str] = (),
    *,
    name: str | None = None,
    imager: str | None = None,
    setup: str | None = None,
) -> Source:
    """The catalogue entry a detection describes; what is unknown is left empty."""
    imaging = Imaging()
    if detection.imaging:
        imaging = Imaging(**{**detection.imaging, "formats": tuple(detection.imaging["formats"])})
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in detection.options.items()}
    return Source(
        code=code, name=name or "", imager=imager or "", setup=setup or "",
        layout=Layout(detection.reader, options),
        labels=tuple(NativeLabel(native, "") for native in labels),
        file=Path(f"{code}.yaml"), imaging=imaging,
    )


def render_draft(
    code: str,
    detection: Detection,
    *,
    name: str | None,
    imager: str | None,
    setup: str | None,
    suggestions: Mapping[str, Suggestion | None],
    data_root_display: str,
    command: str,
) -> str:
    """The text of the draft ``CODE.yaml``: the catalogue entry, with blanks and comments.

    The entry is :func:`components.catalogue.source_document` of what was detected, as
    YAML; the comments say what to fill in, and give each label's count, examples and
    suggested class.
    """
    classes = ", ".join(CLASS_NAMES)
    order = _label_order(detection.labels)
    source = _draft_source(code, detection, order, name=name, imager=imager, setup=setup)
    document = source_document(source)
    if not detection.imaging:
        del document["imaging"]
    labels = document.pop("labels")
    total = sum(detection.labels.values())
    comments = {
        "imaging": [
            f"The images as {detection.images_sampled} sampled files show them; "
            "`marco synth` draws look-alike images from this.",
        ],
        "layout": [
            "Where the label records are, as detected: check it. Paths are relative to the",
            f"data folder the pipeline reads ({_comment(data_root_display)}).",
        ],
    }
    lines = [
        f"# {code}: draft catalogue file written by `{_comment(command)}`.",
        "# Before the catalogue accepts it, fill in name, imager and setup if empty, and give",
        f"# every native label below a class: one of {classes}.",
        "# The loader refuses this file while any of them is empty. Then run",
        "#   marco sources validate DATA_DIR   (counts, unmapped labels, id collisions)",
        "#   marco schema update               (adds the institution and labels to the schema)",
        "# See docs/data-engineers.md for every key.",
        "",
    ]
    for line in _yaml(document).splitlines():
        key = line.split(":", 1)[0]
        lines.extend(f"# {text}" for text in comments.get(key, ()))
        blank = line == f"{key}:" and key in document and document[key] is None
        lines.append(f"{line}    # fill in" if blank else line)
    lines += [
        f"# Every native label found: {len(order)} labels in {total} records. Suggestions come",
        "# from the words and from other institutions' files and are NOT filled in: check",
        "# each against the lab's scoring guide ('other' was used inconsistently across",
        "# sources). Optional per label: description (what the lab means by it).",
        "labels:",
    ]
    for native, entry in zip(order, labels, strict=True):
        count = detection.labels[native]
        examples = _comment(", ".join(detection.examples.get(native, [])[:2]))
        lines.append(f"  # {native!r}: {count} image{'s' if count != 1 else ''}; e.g. {examples}")
        suggestion = suggestions.get(native)
        if suggestion is not None and suggestion.class_name:
            lines.append(f"  # suggestion: {suggestion.class_name} ({suggestion.reason})")
        elif suggestion is not None:
            lines.append(f"  # note: {suggestion.reason}")
        lines.append(textwrap.indent(_yaml([entry]), "  ").rstrip("\n")
                     + f"    # fill in: {classes}")
    return "\n".join(lines) + "\n"


def check_draft_text(path: Path, text: str, labels: Iterable[str]) -> None:
    """Prove a draft is a valid catalogue file once its blanks are filled.

    Raises:
        RuntimeError: when the text would not load, or lists other labels than found;
            a draft must never fail for any reason but the blanks left for a person.
    """
    data = yaml.safe_load(text)
    for key in ("name", "imager", "setup"):
        data[key] = data.get(key) or "to be filled"
    for entry in data["labels"]:
        entry["class"] = CLASS_NAMES[0]
    source = parse_source(path, data)
    if [lab.native for lab in source.labels] != list(labels):
        raise RuntimeError(f"{path}: the draft's labels do not read back as written")


def existing_codes(catalogue_dir: Path) -> dict[str, Path]:
    """Institution code -> file, for every file of a catalogue folder (read leniently)."""
    codes: dict[str, Path] = {}
    for path in sorted(catalogue_dir.glob("*.yaml")) + sorted(catalogue_dir.glob("*.yml")):
        code = path.stem
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, Mapping) and data.get("code"):
                code = str(data["code"])
        except (OSError, yaml.YAMLError):
            pass
        codes.setdefault(code, path)
    return codes


def add_source(
    code: str,
    folder: Path | str,
    catalogue_dir: Path | str,
    *,
    data_root: Path | str | None = None,
    name: str | None = None,
    imager: str | None = None,
    setup: str | None = None,
    force: bool = False,
    label_column: str | None = None,
    path_column: str | None = None,
    command: str | None = None,
) -> Draft:
    """Inspect ``folder`` and write the draft ``CODE.yaml`` into ``catalogue_dir``.

    Raises:
        DraftError: for a malformed code, a code already in the catalogue, an existing
            file without ``force``, or a folder no layout fits.
    """
    if not CODE_PATTERN.match(code):
        raise DraftError(
            f"institution code {code!r} must be 2-16 upper-case letters, digits or '_', "
            "starting with a letter"
        )
    catalogue_dir = Path(catalogue_dir)
    if not catalogue_dir.is_dir():
        raise DraftError(f"catalogue folder {catalogue_dir} does not exist")
    target = catalogue_dir / f"{code}.yaml"
    taken = {c: p for c, p in existing_codes(catalogue_dir).items() if p != target}
    if code in taken:
        raise DraftError(f"institution {code} is already in the catalogue ({taken[code]})")
    if (catalogue_dir / f"{code}.yml").exists():
        raise DraftError(f"{catalogue_dir / f'{code}.yml'} already exists")
    if target.exists():
        try:
            load_source_file(target)
        except CatalogueError:
            pass  # a draft still being filled in, or a broken file: --force may replace it
        else:
            raise DraftError(
                f"institution {code} is already in the catalogue ({target}); edit that file, "
                "or delete it to draft it anew"
            )
        if not force:
            raise DraftError(f"{target} already exists; pass --force to overwrite it")
    folder = Path(folder).resolve()
    root = Path(data_root).resolve() if data_root is not None else folder.parent
    detection = inspect_institution(
        folder, root, code=code, label_column=label_column, path_column=path_column
    )
    known = known_labels(catalogue_dir)
    suggestions = {native: suggest_class(native, known) for native in detection.labels}
    text = render_draft(
        code,
        detection,
        name=name,
        imager=imager,
        setup=setup,
        suggestions={k: v for k, v in suggestions.items() if v is not None},
        data_root_display=str(root),
        command=command or f"marco sources add {code} --from {folder}",
    )
    check_draft_text(target, text, _label_order(detection.labels))
    target.write_text(text, encoding="utf-8")
    missing = [k for k, v in (("name", name), ("imager", imager), ("setup", setup)) if not v]
    return Draft(code, target, root, detection,
                 {k: v for k, v in suggestions.items() if v is not None}, text, missing)


def describe(draft: Draft) -> list[str]:
    """What ``marco sources add`` prints: the detection, the labels and what is left to do."""
    d = draft.detection
    lines = [f"{draft.code}: {d.reader} from {d.described_from} (paths relative to "
             f"{draft.data_root})"]
    if d.reader == "csv_manifest":
        sep = d.options.get("delimiter", ",")
        lines.append(f"  delimiter: {DELIMITER_NAMES.get(sep, repr(sep))}")
    for key in ("root", "image_root", "extensions", "path_pattern"):
        if key in d.options:
            value = d.options[key]
            lines.append(f"  {key}: {', '.join(value) if isinstance(value, list) else value}")
    what = "column" if d.reader == "csv_manifest" else "key"
    for role, name in d.record_fields.items():
        lines.append(f"  {role:<10} <- {what} {name!r}")
    if d.ignored:
        lines.append(f"  not used: {', '.join(repr(c) for c in d.ignored)}")
    lines.append(f"{d.records} records, {d.files_found} image files found")
    if d.imaging:
        im = d.imaging
        lines.append(f"images: {im['colour']} {'/'.join(im['formats'])} {im['width']}x"
                     f"{im['height']} (from {d.images_sampled} sampled)")
    if d.bad_records:
        counts = ", ".join(f"{k} {n}" for k, n in d.bad_records.most_common())
        lines.append(f"unreadable records: {counts}; e.g. {'; '.join(d.bad_examples)}")
    lines.append(f"native labels ({len(d.labels)}):")
    for native in _label_order(d.labels):
        suggestion = draft.suggestions.get(native)
        hint = ""
        if suggestion is not None:
            hint = (f"  suggestion: {suggestion.class_name} ({suggestion.reason})"
                    if suggestion.class_name else f"  note: {suggestion.reason}")
        example = (d.examples.get(native) or [""])[0]
        lines.append(f"  {native!r:<28} {d.labels[native]:>7}  e.g. {example}{hint}")
    for note in d.notes:
        lines.append(f"note: {note}")
    for alternative in d.alternatives:
        lines.append(f"also considered: {alternative}")
    lines.append(f"wrote {draft.path} (draft: classes left empty)")
    todo = [*draft.missing, f"the class of each of the {len(d.labels)} labels"]
    lines.append("next: fill in " + ", ".join(todo) + f" in {draft.path.name}, then")
    option = (
        "" if draft.path.parent.resolve() == SOURCES_DIR.resolve()
        else f" --catalogue {draft.path.parent}"
    )
    lines.append(f"  marco sources validate {draft.data_root}{option}")
    lines.append(f"  marco schema update{option}")
    return lines
