"""Layout readers: turn an institution's files into label records, generically.

Three readers cover the layouts labs export today: a CSV manifest, a folder per
label and a JSON-lines export. Each is driven only by the ``layout`` section of the
institution's catalogue file, so a new institution whose files look like one of
them needs a YAML file and no code.

Work is split into *units* (one manifest, one label folder, one JSON-lines file):
the driver lists units, and each unit is read independently, which is what lets
ingestion fan the reading out over Beam workers. Readers never raise on a bad
record: they yield a :class:`BadRecord` naming the file and line, so nothing is
silently dropped.

Paths may be local or on an object store (``gs://`` on Dataflow): listing and
reading go through :mod:`components.filesystem`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from components import filesystem
from components.catalogue import Source
from components.imagecheck import EXAMPLE_FORMATS, extensions

# What a folder_per_label layout reads when it names no extensions.
DEFAULT_EXTENSIONS = extensions(EXAMPLE_FORMATS)


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
    """A record that could not be read; ``origin`` names the file and line."""

    institution: str
    origin: str
    reason: str
    detail: str = ""
    path: str = ""


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
        return BadRecord(source.code, origin, "missing_field", "empty image path")
    if not label:
        return BadRecord(source.code, origin, "missing_field", "empty label",
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
    with filesystem.open_text(unit, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for f, c in columns.items() if f in ("path", "label") and c not in header]
        if missing:
            yield BadRecord(
                source.code,
                f"{unit}:1",
                "bad_manifest",
                f"header lacks column(s) {missing} (has {header}); see layout.columns in "
                f"{source.file}",
            )
            return
        for row in reader:
            origin = f"{unit}:{reader.line_num}"
            if None in row:  # more cells than header columns
                yield BadRecord(source.code, origin, "bad_record", "more cells than the header")
                continue
            values = {f: (row.get(c) or "") for f, c in columns.items()}
            yield _make_record(source, image_root, values, origin)


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


def json_lines(handle: Iterable[str]) -> Iterator[tuple[int, Mapping | None, str]]:
    """``(line number, object, "")`` per non-blank line of a JSON-lines file, or
    ``(line number, None, why)`` for a line that is not a JSON object."""
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, None, f"not JSON: {exc.msg}"
            continue
        if isinstance(obj, Mapping):
            yield number, obj, ""
        else:
            yield number, None, "line is not a JSON object"


def _read_jsonl(source: Source, data_dir: str, unit: str) -> Iterator[Record | BadRecord]:
    fields = source.layout.record_fields
    image_root = _image_root(source, data_dir, unit)
    with filesystem.open_text(unit, encoding="utf-8") as handle:
        for number, obj, problem in json_lines(handle):
            origin = f"{unit}:{number}"
            if obj is None:
                yield BadRecord(source.code, origin, "bad_record", problem)
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


_READERS = {
    "csv_manifest": _read_csv,
    "jsonl": _read_jsonl,
    "folder_per_label": _read_folder,
}


def read_unit(source: Source, data_dir: Path | str, unit: str) -> Iterator[Record | BadRecord]:
    """Read one unit (manifest, export file or label folder) of an institution."""
    data_dir = _root(data_dir)
    try:
        yield from _READERS[source.layout.reader](source, data_dir, unit)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        yield BadRecord(source.code, unit, "unreadable_records", f"{type(exc).__name__}: {exc}")


def read_source(source: Source, data_dir: Path | str) -> Iterator[Record | BadRecord]:
    """Every record of one institution, unit after unit."""
    for unit in list_units(source, data_dir):
        yield from read_unit(source, data_dir, unit)
