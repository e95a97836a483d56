"""Looking at a new institution's folder: which files are there, which of them are
label records, and which layout reads them (``marco sources add``).

The folder is walked once; record files (delimited tables, JSON lines, XML exports)
are grouped and sampled, each group's column roles are guessed (:mod:`.roles`), and
the group whose image paths resolve best wins, or else one folder per label. Every
record is then read with the pipeline's own reader (:mod:`components.readers`), so
the counts are what ingestion will see. Every file type found and not used is
reported with its count and the reason.
"""

from __future__ import annotations

import csv
import glob
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

from PIL import Image, UnidentifiedImageError

from components import filesystem
from components.catalogue import Imaging
from components.readers import (
    BadRecord,
    flatten,
    json_lines,
    read_source,
    xml_events,
    xml_local_name,
    xml_records,
)
from components.tools.drafting.detection import Detection, DraftError, draft_source
from components.tools.drafting.roles import (
    IMAGE_EXTENSIONS,
    IMAGE_NAMES,
    INGESTED_FORMATS,
    INGESTED_NAMES,
    OTHER_IMAGE_EXTENSIONS,
    assign_roles,
    detect_path_pattern,
    file_extension,
    is_image_name,
    profile_columns,
)

TABLE_EXTENSIONS = ("csv", "tsv", "tab", "txt")
JSONL_EXTENSIONS = ("jsonl", "ndjson", "json")
XML_EXTENSIONS = ("xml",)
RECORD_EXTENSIONS = TABLE_EXTENSIONS + JSONL_EXTENSIONS + XML_EXTENSIONS
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
SAMPLE_RECORDS = 2000  # records profiled to recognise column roles
SAMPLE_PATHS = 200  # image paths tried when looking for the image root
SAMPLE_IMAGES = 24  # images opened to describe the imager's output
SAMPLE_XML_FILES = 20  # XML files surveyed and sampled
SAMPLE_XML_ELEMENTS = 50_000  # elements surveyed per XML file at most
XML_LEVELS = 2  # enclosing elements whose children a drafted XML field may name
MAX_LABEL_FOLDERS = 100
EXAMPLES_PER_LABEL = 3
NOT_RECORDS = "not images or label records"


def _posix(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _walk(folder: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(record-like files, image files, other files) below ``folder``, sorted; hidden
    files and folders are left out."""
    records, images, others = [], [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            ext = file_extension(name)
            if ext in RECORD_EXTENSIONS:
                records.append(Path(dirpath) / name)
            elif ext in IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS:
                images.append(Path(dirpath) / name)
            else:
                others.append(Path(dirpath) / name)
    return records, images, others


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
    records: str | None = None  # XML: the element path of a record

    @property
    def described(self) -> str:
        return f"{self.pattern}, records {self.records}" if self.records else self.pattern


def _sample_table(files: Sequence[Path]) -> tuple[str | None, list[str], list[dict[str, str]]]:
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


def _sample_jsonl(files: Sequence[Path]) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """(dotted keys, rows of flattened records, notes) from JSON-lines files, read as
    the ``jsonl`` reader reads them."""
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


def _xml_structure(files: Sequence[Path]) -> tuple[Counter, set[tuple[str, ...]]]:
    """(element path -> count, element paths whose elements hold an image file name)."""
    counts: Counter = Counter()
    with_images: set[tuple[str, ...]] = set()
    for path in files[:SAMPLE_XML_FILES]:
        stack: list[str] = []
        seen = 0
        try:
            with open(path, "rb") as handle:
                for event, element, _ in xml_events(handle):
                    if event == "start":
                        stack.append(xml_local_name(element.tag))
                        counts[tuple(stack)] += 1
                        seen += 1
                        continue
                    values = list(element.attrib.values())
                    if len(element) == 0:
                        values.append((element.text or "").strip())
                    if any(is_image_name(v) for v in values):
                        with_images.update(tuple(stack[:i]) for i in range(1, len(stack) + 1))
                    stack.pop()
                    if not stack:
                        element.clear()
                    if seen >= SAMPLE_XML_ELEMENTS:
                        break
        except (OSError, ParseError, ValueError):
            continue
    return counts, with_images


def _sample_xml(files: Sequence[Path]) -> list[tuple[str, list[str], list[dict[str, str]]]]:
    """(records path, field paths, rows) for each element path that could be a record:
    one holding an image file name, outermost first, each read as the ``xml`` reader
    reads it (:func:`components.readers.xml_records`)."""
    counts, with_images = _xml_structure(files)
    found = []
    for records in sorted(with_images, key=lambda p: (len(p), -counts[p], p)):
        rows: list[dict[str, str]] = []
        names: dict[str, None] = {}
        levels = min(len(records) - 1, XML_LEVELS)
        for path in files[:SAMPLE_XML_FILES]:
            with open(path, "rb") as handle:
                for _, values, _, _ in xml_records(handle, records, levels):
                    if values is not None:
                        names.update(dict.fromkeys(values))
                        rows.append(values)
                    if len(rows) >= SAMPLE_RECORDS:
                        break
            if len(rows) >= SAMPLE_RECORDS:
                break
        if rows:
            found.append(("/".join(records), list(names), rows))
    return found


def _record_candidates(record_files: Sequence[Path], data_root: Path) -> list[_Candidate]:
    groups: dict[tuple, list[Path]] = {}
    for path in record_files:
        ext = file_extension(path.name)
        kind = (
            "jsonl" if ext in JSONL_EXTENSIONS else "xml" if ext in XML_EXTENSIONS
            else "csv_manifest"
        )
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
                delimiter, names, rows = _sample_table(files)
                found = [_Candidate(kind, files, pattern, rows, names, delimiter, notes)]
            elif kind == "jsonl":
                names, rows, more = _sample_jsonl(files)
                found = [_Candidate(kind, files, pattern, rows, names, None, notes + more)]
            else:
                found = [
                    _Candidate(kind, files, pattern, rows, names, None, list(notes), records)
                    for records, names, rows in _sample_xml(files)
                ]
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        candidates.extend(c for c in found if c.rows and len(c.names) >= 2)
    return candidates


def _candidate_roots(manifest_dir: Path, folder: Path, data_root: Path) -> list[Path]:
    """Folders image paths may be relative to: the manifest's, the institution's and
    its sub-folders two levels down (at most about 60), the data root."""
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
    return list(dict.fromkeys(roots))


def _is_file(root: Path, value: str) -> bool:
    """Whether ``value`` names a file below ``root``; False for a value no file system
    takes (a NUL byte, a name too long), which a record file may hold."""
    try:
        return (root / value).is_file()
    except (OSError, ValueError):
        return False


def _image_root(values: Sequence[str], manifest_dir: Path, folder: Path, data_root: Path
                ) -> tuple[Path, int, int]:
    """The folder the manifest's image paths resolve from: (folder, found, tried)."""
    sample = [v for v in values if v][:SAMPLE_PATHS]
    best = (manifest_dir, -1)
    for root in _candidate_roots(manifest_dir, folder, data_root):
        found = sum(1 for v in sample if _is_file(root, v))
        if found > best[1]:
            best = (root, found)
    return best[0], max(best[1], 0), len(sample)


def _prefix_splits(path: str) -> list[tuple[str, str]]:
    """(absolute prefix, rest) at each separator of ``path``, longest rest first.

    A prefix is never only separators; a drive's ``C:`` keeps its separator; a rest
    with an empty part (``gs://``) or ``..`` is left out.
    """
    splits = []
    for index, char in enumerate(path):
        if char not in "/\\":
            continue
        prefix, rest = path[:index], path[index + 1:]
        if prefix.endswith(":"):
            prefix = path[:index + 1]
        rest = rest.replace("\\", "/")
        parts = rest.split("/")
        if (prefix.strip("/\\") and filesystem.is_absolute(prefix) and all(parts)
                and ".." not in parts):
            splits.append((prefix, rest))
    return splits


def propose_path_prefixes(
    values: Sequence[str], manifest_dir: Path, folder: Path, data_root: Path
) -> tuple[dict[str, str], int, int]:
    """An imager's own absolute image paths mapped onto the institution's folder.

    Exports often name images where the imager stored them
    (``\\\\imager\\RockMakerStorage\\WellImages\\123\\A01.jpg``); the lab copies
    the files into its data folder below some folder. For each sampled absolute path
    that is not already inside the data root, the shortest prefix whose removal
    leaves a file under one of the candidate folders is counted; the most frequent
    (prefix, folder) pair is proposed as the catalogue's ``path_prefixes``.

    Returns:
        ``({prefix: folder relative to the data root}, paths it maps, absolute paths
        tried)``; an empty mapping when none maps.
    """
    sample = [v for v in values if v and filesystem.is_absolute(v)
              and not filesystem.contains(str(data_root), v)][:SAMPLE_PATHS]
    roots = _candidate_roots(manifest_dir, folder, data_root)
    votes: Counter = Counter()
    for value in sample:
        hit = next(((prefix, root) for prefix, rest in _prefix_splits(value)
                    for root in roots if _is_file(root, rest)), None)
        if hit is not None:
            votes[hit] += 1
    if not votes:
        return {}, 0, len(sample)
    (prefix, root), count = votes.most_common(1)[0]
    return {prefix: _posix(root, data_root) or "."}, count, len(sample)


# --------------------------------------------------------------------------- detection


def _manifest_detection(
    candidate: _Candidate,
    folder: Path,
    data_root: Path,
    label_column: str | None,
    path_column: str | None,
) -> tuple[Detection, float]:
    kind = {"csv_manifest": "column", "jsonl": "key"}.get(candidate.reader, "element path")
    columns = profile_columns(candidate.names, candidate.rows)
    mapping, ignored, notes = assign_roles(
        columns, label_column=label_column, path_column=path_column, kind=kind
    )
    paths = [row.get(mapping["path"], "").strip() for row in candidate.rows]
    root, found, tried = _image_root(paths, candidate.files[0].parent, folder, data_root)
    prefixes: dict[str, str] = {}
    if found < tried:
        prefixes, mapped, absolute = propose_path_prefixes(
            paths, candidate.files[0].parent, folder, data_root)
        if prefixes:
            found += mapped
            notes = [*notes, f"{mapped} of {absolute} sampled absolute image paths (the "
                     f"imager's own storage) map onto the data folder with path_prefixes "
                     f"{prefixes}: check it"]
    options: dict[str, Any] = {}
    if candidate.reader == "csv_manifest":
        options["manifest"] = candidate.pattern
        options["image_root"] = _posix(root, data_root)
        if candidate.delimiter != ",":
            options["delimiter"] = candidate.delimiter
        options["columns"] = mapping
    else:
        options["files"] = candidate.pattern
        if candidate.records:
            options["records"] = candidate.records
        options["image_root"] = _posix(root, data_root)
        options["fields"] = mapping
    wanted = [r for r in ("plate", "well", "imaged_at") if r not in mapping]
    pattern = detect_path_pattern([p for p in paths if p][:SAMPLE_RECORDS], wanted)
    if pattern:
        options["path_pattern"] = pattern
    detection = Detection(
        reader=candidate.reader,
        options=options,
        described_from=candidate.described,
        ignored=ignored,
        notes=candidate.notes + notes,
        path_prefixes=prefixes,
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
        if len(dirs) == 1 and not any(p.is_file() and is_image_name(p.name) for p in children):
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
            f"{folder}: found {len(images)} images but no record file (CSV/TSV manifest, "
            "JSON lines or XML export) that names them, and no folders of images to read "
            "as labels"
        )
    if len(by_label) > MAX_LABEL_FOLDERS:
        raise DraftError(
            f"{root} has {len(by_label)} folders of images: too many for one folder per "
            "label (plates or dates, perhaps); add a manifest naming each image's label"
        )
    readable = [
        rel for label in sorted(by_label) for rel in by_label[label]
        if file_extension(rel.name) in IMAGE_EXTENSIONS
    ]
    extensions = [ext for ext, _ in Counter(file_extension(r.name) for r in readable).most_common()]
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
            notes.append(
                f"{path}: {fmt or 'unknown'} images cannot be ingested ({INGESTED_NAMES} only)"
            )
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
        label_column: the column, dotted JSON key or XML path holding the label,
            when the guess would be wrong.
        path_column: the column, dotted key or XML path holding the image path.

    Raises:
        DraftError: when no layout fits, naming what was found.
    """
    folder = Path(folder).resolve()
    data_root = Path(data_root).resolve() if data_root is not None else folder.parent
    if not folder.is_dir():
        raise DraftError(f"{folder} is not a folder")
    if folder != data_root and not folder.is_relative_to(data_root):
        raise DraftError(f"{folder} is not inside the data root {data_root}")
    record_files, images, others = _walk(folder)
    if not images:
        raise DraftError(f"{folder}: no image files ({IMAGE_NAMES}) found")
    detection: Detection | None = None
    rejected: list[str] = []
    why_not: dict[Path, str] = {}  # record file -> why it is not read
    scored: list[tuple[float, int, Detection, _Candidate]] = []
    candidates = _record_candidates(record_files, data_root)
    for candidate in candidates:
        try:
            found, share = _manifest_detection(
                candidate, folder, data_root, label_column, path_column
            )
        except DraftError as exc:
            rejected.append(f"{candidate.described}: {exc}")
            for path in candidate.files:
                why_not.setdefault(path, str(exc))
            continue
        scored.append((share, len(candidate.rows), found, candidate))
    chosen: _Candidate | None = None
    if scored:
        scored.sort(key=lambda s: (s[0] >= 0.5, s[1], s[0]), reverse=True)
        share, _, detection, chosen = scored[0]
        for _, _, other, candidate in scored[1:]:
            detection.alternatives.append(f"{other.reader} {other.described_from}")
            for path in candidate.files:
                why_not[path] = f"{other.reader} records not chosen (fewer records or images)"
        if share < 0.5 and label_column is None and path_column is None:
            try:
                detection = _folder_detection(folder, data_root, images)
                detection.notes.append(
                    f"record file {scored[0][2].described_from} names images that do not "
                    "exist; reading one folder per label instead"
                )
                for path in chosen.files:
                    why_not[path] = "the images they name do not exist"
                chosen = None
            except DraftError:
                pass
    if detection is None:
        if label_column or path_column:
            raise DraftError(
                "--label-column and --path-column apply to a manifest, JSON-lines or XML "
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
    used_images = _count_records(detection, code, data_root)
    used_records = set(chosen.files) if chosen else set()
    if chosen:  # the glob may read more files of the group than were sampled
        used_records.update(Path(p) for p in glob.glob(str(data_root / chosen.pattern)))
    detection.skipped = _skipped(
        detection, record_files, used_records, why_not, images, used_images, others
    )
    return detection


def _skipped(
    detection: Detection,
    record_files: Sequence[Path],
    used_records: set[Path],
    why_not: dict[Path, str],
    images: Sequence[Path],
    used_images: set[Path],
    others: Sequence[Path],
) -> dict[str, tuple[int, str]]:
    """File type -> (files found and not used, why), for every type the draft does not
    read at all, and for record files of a used type that the layout does not read."""
    reasons: dict[str, Counter] = {}

    def skip(path: Path, reason: str) -> None:
        reasons.setdefault(file_extension(path.name), Counter())[reason] += 1

    for path in others:
        skip(path, NOT_RECORDS)
    for path in record_files:
        if path not in used_records:
            skip(path, "label records the layout does not read: " + why_not.get(
                path, "not a table, JSON lines or XML export naming images"
            ))
    by_type: dict[str, list[Path]] = {}
    for path in images:
        by_type.setdefault(file_extension(path.name), []).append(path)
    for ext, paths in by_type.items():
        if ext in OTHER_IMAGE_EXTENSIONS:
            for path in paths:
                skip(path, f"images ingestion cannot read ({INGESTED_NAMES} only)")
        elif not used_images.intersection(p.resolve() for p in paths):
            where = (
                "in no label folder the layout reads" if detection.reader == "folder_per_label"
                else "no record names them"
            )
            for path in paths:
                skip(path, f"images {where}")
    return {
        ext: (sum(counter.values()), "; ".join(reason for reason, _ in counter.most_common()))
        for ext, counter in sorted(reasons.items())
    }


def _count_records(detection: Detection, code: str, data_root: Path) -> set[Path]:
    """Read every record with the real reader: label counts, examples, files found.

    Returns:
        The image files the records name that exist.
    """
    source = draft_source(code, detection, name=code)
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
    return {Path(p).resolve() for p in existing}
