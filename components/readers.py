"""Layout readers: turn an institution's files into label records, generically.

Four readers cover the layouts labs export today: a CSV manifest, a folder per
label, a JSON-lines export and an imager's XML export. Each is driven only by the
``layout`` section of the institution's catalogue file, so a new institution whose
files look like one of them needs a YAML file and no code.

Work is split into *units* (one manifest, one label folder, one JSON-lines or XML file):
the driver lists units, and each unit is read independently, which is what lets
ingestion fan the reading out over Beam workers. Readers never raise on a bad
record: they yield a :class:`BadRecord` naming the file and line, so nothing is
silently dropped, and one bad row (too few or too many cells, bytes that are not
UTF-8, a line that is not JSON) never costs the rest of its file. Every item then
passes :func:`components.records.checked`, which refuses images outside the data
folder before anything opens them.

Paths may be local or on an object store (``gs://`` on Dataflow): listing and
reading go through :mod:`components.filesystem`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO
from xml.etree.ElementTree import Element, ParseError

try:  # hardened against entity expansion and external entities, where installed
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import iterparse as _xml_iterparse

    _UNSAFE_XML: tuple[type[Exception], ...] = (DefusedXmlException,)
except ImportError:  # the standard library's parser (expat limits entity expansion)
    from xml.etree.ElementTree import iterparse as _xml_iterparse

    _UNSAFE_XML = ()

from components import filesystem
from components.catalogue import Source
from components.imagecheck import EXAMPLE_FORMATS, extensions
from components.records import (
    BAD_MANIFEST,
    BAD_RECORD,
    MISSING_FIELD,
    UNDECODABLE_RECORD,
    UNREADABLE_RECORDS,
    BadRecord,
    Record,
    checked,
    undecodable,
)

# What a folder_per_label layout reads when it names no extensions.
DEFAULT_EXTENSIONS = extensions(EXAMPLE_FORMATS)
# Text files are decoded so that a bad byte spoils one row, not the file (see
# components.records.undecodable).
_TEXT_ERRORS = "surrogateescape"


def _root(data_dir: Path | str) -> str:
    return filesystem.normalise(str(data_dir))


def _resolve(data_dir: str, relative: str) -> str:
    return filesystem.join(data_dir, relative)


def list_units(source: Source, data_dir: Path | str) -> list[str]:
    """The independent pieces of an institution's records, as absolute paths or URLs.

    Raises:
        FileNotFoundError: when the layout's manifest, export or root folder is absent,
            naming the institution and the configured key.
    """
    data_dir = _root(data_dir)
    layout = source.layout
    if layout.reader == "folder_per_label":
        root = _resolve(data_dir, layout.option("root"))
        if not filesystem.isdir(root):
            raise FileNotFoundError(
                f"{source.code}: layout.root folder {root} does not exist ({source.file})"
            )
        return filesystem.subfolders(root)
    key = "manifest" if layout.reader == "csv_manifest" else "files"
    pattern = _resolve(data_dir, layout.option(key))
    units = filesystem.glob(pattern)
    if not units:
        raise FileNotFoundError(
            f"{source.code}: layout.{key} matches no file: {pattern} ({source.file})"
        )
    return units


def _image_root(source: Source, data_dir: str, unit: str) -> str:
    configured = source.layout.option("image_root")
    return _resolve(data_dir, configured) if configured else filesystem.parent(unit)


def _from_pattern(source: Source, relative: str) -> dict[str, str]:
    pattern = source.layout.option("path_pattern")
    if not pattern:
        return {}
    match = re.search(pattern, relative)
    return {k: v for k, v in match.groupdict().items() if v} if match else {}


def _derived_id(source: Source, relative: str) -> str:
    stem, _ = os.path.splitext(relative.replace(os.sep, "/"))
    return f"{source.code}/{stem}"


def _make_record(
    source: Source, image_root: str, values: Mapping[str, str], origin: str
) -> Record | BadRecord:
    relative = values.get("path", "").strip()
    label = values.get("label", "").strip()
    if not relative:
        return BadRecord(source.code, origin, MISSING_FIELD, "empty image path")
    if not label:
        return BadRecord(source.code, origin, MISSING_FIELD, "empty label",
                         _resolve(image_root, relative))
    fields = _from_pattern(source, relative)
    fields.update({k: v.strip() for k, v in values.items() if v and v.strip()})
    return Record(
        institution=source.code,
        image_id=fields.get("image_id") or _derived_id(source, relative),
        path=_resolve(image_root, relative),
        native_label=label,
        origin=origin,
        plate=fields.get("plate", ""),
        well=fields.get("well", ""),
        imaged_at=fields.get("imaged_at", ""),
    )


def _read_csv(source: Source, data_dir: str, unit: str) -> Iterator[Record | BadRecord]:
    columns = source.layout.record_fields
    delimiter = source.layout.option("delimiter", ",")
    image_root = _image_root(source, data_dir, unit)
    with filesystem.open_text(
        unit, encoding="utf-8-sig", newline="", errors=_TEXT_ERRORS
    ) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for f, c in columns.items() if f in ("path", "label") and c not in header]
        if missing:
            yield BadRecord(
                source.code,
                f"{unit}:1",
                BAD_MANIFEST,
                f"header lacks column(s) {missing} (has {header}); see layout.columns in "
                f"{source.file}",
            )
            return
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a NUL byte: this row only, then read on
                yield BadRecord(source.code, f"{unit}:{reader.line_num + 1}", BAD_RECORD,
                                f"not a CSV row: {exc}")
                continue
            yield _csv_record(source, image_root, columns, header, row,
                              f"{unit}:{reader.line_num}")


def _csv_record(
    source: Source,
    image_root: str,
    columns: Mapping[str, str],
    header: list[str],
    row: Mapping,
    origin: str,
) -> Record | BadRecord:
    """One manifest row: a record, or a bad record when its cells cannot be trusted."""
    extra = row.get(None) or []
    named = [(k, v) for k, v in row.items() if k is not None and v is not None]
    for column, value in [*named, *(("(extra cell)", v) for v in extra)]:
        problem = undecodable(value)
        if problem:
            return BadRecord(source.code, origin, UNDECODABLE_RECORD,
                             f"column {column!r}: {problem}")
    cells = [v for _, v in named] + list(extra)
    if extra or len(cells) < len(header):
        # A short row would shift its values into the wrong columns; a long one is
        # most likely an unquoted delimiter inside a value.
        which = "more" if extra else "fewer"
        return BadRecord(source.code, origin, BAD_RECORD,
                         f"{which} cells than the header: {len(cells)} for {len(header)} "
                         f"columns")
    values = {f: (row.get(c) or "") for f, c in columns.items()}
    return _make_record(source, image_root, values, origin)


def flatten(obj: Mapping, prefix: str = "") -> dict[str, str]:
    """Every value of a JSON object a dotted key addresses, as text (numbers too).

    ``{"image": {"file": "a.jpg"}, "score": 70}`` gives ``{"image.file": "a.jpg",
    "score": "70"}``. Lists, nulls and keys holding a dot are not addressable.
    """
    out: dict[str, str] = {}
    for key, value in obj.items():
        key = str(key)
        if "." in key:
            continue
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        elif value is not None and not isinstance(value, list):
            out[dotted] = str(value)
    return out


def json_line(line: str) -> tuple[Mapping | None, str]:
    """``(object, "")`` for a line holding a JSON object, else ``(None, why)``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg}"
    if isinstance(obj, Mapping):
        return obj, ""
    return None, "line is not a JSON object"


def json_lines(handle: Iterable[str]) -> Iterator[tuple[int, Mapping | None, str]]:
    """``(line number, object, "")`` per non-blank line of a JSON-lines file, or
    ``(line number, None, why)`` for a line that is not a JSON object."""
    for number, line in enumerate(handle, start=1):
        if line.strip():
            yield (number, *json_line(line))


def _read_jsonl(source: Source, data_dir: str, unit: str) -> Iterator[Record | BadRecord]:
    fields = source.layout.record_fields
    image_root = _image_root(source, data_dir, unit)
    with filesystem.open_text(unit, encoding="utf-8", errors=_TEXT_ERRORS) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            origin = f"{unit}:{number}"
            problem = undecodable(line)
            if problem:
                yield BadRecord(source.code, origin, UNDECODABLE_RECORD, problem)
                continue
            obj, problem = json_line(line)
            if obj is None:
                yield BadRecord(source.code, origin, BAD_RECORD, problem)
                continue
            flat = flatten(obj)
            values = {f: flat.get(key, "") for f, key in fields.items()}
            yield _make_record(source, image_root, values, origin)


def _read_folder(source: Source, data_dir: str, unit: str) -> Iterator[Record | BadRecord]:
    label_dir = filesystem.normalise(unit)
    label = filesystem.name(label_dir)
    extensions = tuple(source.layout.option("extensions", DEFAULT_EXTENSIONS))
    for dirpath, _, filenames in filesystem.walk(label_dir):
        for name in filenames:
            if name.rsplit(".", 1)[-1].lower() not in extensions:
                continue
            full = filesystem.join(dirpath, name)
            relative = filesystem.relative_to(full, label_dir)
            fields = _from_pattern(source, relative)
            yield Record(
                institution=source.code,
                # Not under the label folder: a relabelled image keeps its id (and split).
                image_id=fields.get("image_id") or _derived_id(source, relative),
                path=full,
                native_label=label,
                origin=full,
                plate=fields.get("plate", ""),
                well=fields.get("well", ""),
                imaged_at=fields.get("imaged_at", ""),
            )


def xml_local_name(name: str) -> str:
    """An element or attribute name without its namespace (``{uri}Drop`` -> ``Drop``)."""
    return name.rsplit("}", 1)[-1]


class _LineFeed:
    """A binary file handed to the XML parser a line (at most 64 KiB) at a time.

    The parser's events for one chunk are delivered before the next chunk is read, so
    ``line`` is the line on which the tag of the current event was completed.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._complete = 0
        self.line = 1

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.readline(1 << 16)
        self.line = self._complete + 1
        if chunk.endswith(b"\n"):
            self._complete += 1
        return chunk


def xml_events(handle: BinaryIO) -> Iterator[tuple[str, Element, int]]:
    """``(event, element, line)`` for every start and end tag of an XML file, streamed
    (``iterparse``), with the line of the tag.

    Raises:
        xml.etree.ElementTree.ParseError: malformed XML, with its ``position``.
        ValueError: an entity or external reference refused by defusedxml.
    """
    feed = _LineFeed(handle)
    for event, element in _xml_iterparse(feed, events=("start", "end")):
        yield event, element, feed.line


def _subtree_values(element: Element, prefix: str, out: dict[str, str], skip: str = "") -> None:
    for key, value in element.attrib.items():
        out[f"{prefix}@{xml_local_name(key)}"] = value
    names = Counter(xml_local_name(child.tag) for child in element)
    for child in element:
        name = xml_local_name(child.tag)
        if names[name] > 1 or name == skip:
            continue  # a repeated element is not addressable, as a JSON list is not
        text = (child.text or "").strip()
        if len(child) == 0 and (text or not child.attrib):
            out[f"{prefix}{name}"] = text
        _subtree_values(child, f"{prefix}{name}/", out)


def xml_values(record: Element, ancestors: Sequence[Element], levels: int) -> dict[str, str]:
    """Every value a field path of an ``xml`` layout may name, from a record element.

    ``{"@well": "A1", "Image/@path": "a.jpg", "Score": "Crystals", "../@barcode": "P1"}``
    for ``<Plate barcode="P1"><Drop well="A1"><Image path="a.jpg"/><Score>Crystals
    </Score></Drop></Plate>``: the record's attributes, the text of child elements
    without children of their own, their attributes (at any depth), and through
    ``../`` the attributes of every enclosing element, plus the children of the
    ``levels`` nearest ones (except the branch holding the records). Texts are
    stripped; a name used by two siblings addresses neither of them.
    """
    out: dict[str, str] = {}
    _subtree_values(record, "", out)
    chain = [*ancestors, record]
    for up in range(1, len(chain)):
        element, below = chain[-1 - up], xml_local_name(chain[-up].tag)
        prefix = "../" * up
        if up <= levels:
            _subtree_values(element, prefix, out, skip=below)
        else:
            out.update({f"{prefix}@{xml_local_name(k)}": v for k, v in element.attrib.items()})
    return out


def xml_wait_levels(paths: Iterable[str]) -> int:
    """How many enclosing elements must be complete before a record's fields are read:
    the most ``../`` of a path naming an enclosing element's child (attributes of an
    enclosing element are known as soon as it opens)."""
    levels = 0
    for path in paths:
        up = path.count("../")
        if up and not path[3 * up :].startswith("@"):
            levels = max(levels, up)
    return levels


def xml_records(
    handle: BinaryIO, records: Sequence[str], levels: int = 0
) -> Iterator[tuple[int, dict[str, str] | None, str, str]]:
    """``(line, values, "", "")`` per record element of an XML export, streamed.

    ``records`` is the path of element names from the root element to a record
    (``("Plate", "Drop")``), ``values`` what :func:`xml_values` gives (``levels``
    enclosing elements are read whole first). A record's elements are freed once read,
    so a large export is never held in memory. A problem is ``(line, None, reason,
    detail)``: a root element other than ``records[0]`` (``bad_manifest``, the file is
    not read), or malformed XML (``bad_record``: the records before it are read, the
    rest of the file is not).
    """
    depth = len(records)
    ready = depth - levels  # depth of the element whose end makes its records complete
    stack: list[Element] = []
    on_path: list[bool] = []  # stack[i] is records[: i + 1]
    pending: list[tuple[int, Element, tuple[Element, ...]]] = []
    line = 1
    try:
        for event, element, line in xml_events(handle):
            if event == "start":
                level = len(stack)
                matched = level < depth and (level == 0 or on_path[-1]) and (
                    xml_local_name(element.tag) == records[level]
                )
                if level == 0 and not matched:
                    yield line, None, BAD_MANIFEST, (
                        f"root element <{xml_local_name(element.tag)}> is not <{records[0]}>, the "
                        f"first element of the layout's records path {'/'.join(records)}"
                    )
                    return
                stack.append(element)
                on_path.append(matched)
                if matched and len(stack) == depth:
                    pending.append((line, element, tuple(stack[:-1])))
                continue
            level, matched = len(stack), on_path[-1]
            if matched and level == ready:
                for start, record, ancestors in pending:
                    yield start, xml_values(record, ancestors, levels), "", ""
                pending.clear()
            if matched and level <= ready:  # read: free it
                if level > 1:
                    stack[-2].remove(element)
                else:
                    element.clear()
            stack.pop()
            on_path.pop()
    except ParseError as exc:
        at = exc.position[0] if getattr(exc, "position", None) else line
        yield at, None, BAD_RECORD, f"malformed XML: {exc}; the rest of the file is not read"
    except _UNSAFE_XML as exc:
        yield line, None, BAD_RECORD, (
            f"refused XML ({type(exc).__name__}: {exc}); the rest of the file is not read"
        )


def _open_bytes(path: str) -> BinaryIO:
    """A binary file opened for reading; a remote one is read whole (an export file)."""
    if not filesystem.is_remote(path):
        return open(path, "rb")
    return io.BytesIO(filesystem.read_bytes(path))


def _read_xml(source: Source, data_dir: str, unit: str) -> Iterator[Record | BadRecord]:
    fields = source.layout.record_fields
    records = tuple(source.layout.option("records").split("/"))
    image_root = _image_root(source, data_dir, unit)
    with _open_bytes(unit) as handle:
        for line, values, reason, detail in xml_records(
            handle, records, xml_wait_levels(fields.values())
        ):
            origin = f"{unit}:{line}"
            if values is None:
                yield BadRecord(source.code, origin, reason, detail)
                continue
            record_values = {f: values.get(path, "") for f, path in fields.items()}
            yield _make_record(source, image_root, record_values, origin)


_READERS = {
    "csv_manifest": _read_csv,
    "jsonl": _read_jsonl,
    "folder_per_label": _read_folder,
    "xml": _read_xml,
}


def read_unit(source: Source, data_dir: Path | str, unit: str) -> Iterator[Record | BadRecord]:
    """Read one unit (manifest, export file or label folder) of an institution.

    Every item is :func:`components.records.checked` against the data folder
    ``data_dir``: an image path outside it is a :class:`BadRecord`
    (``outside_data_root``) and is never opened. A unit that cannot be read at all
    is one :class:`BadRecord` (``unreadable_records``).
    """
    data_dir = _root(data_dir)
    try:
        for item in _READERS[source.layout.reader](source, data_dir, unit):
            yield checked(item, source, data_dir)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        yield BadRecord(source.code, unit, UNREADABLE_RECORDS, f"{type(exc).__name__}: {exc}")


def read_source(source: Source, data_dir: Path | str) -> Iterator[Record | BadRecord]:
    """Every record of one institution, unit after unit."""
    for unit in list_units(source, data_dir):
        yield from read_unit(source, data_dir, unit)
