"""Beam stages of ImageExampleGen: read, check, deduplicate, split and write images.

The graph, built by :class:`IngestImages` and :class:`WriteIngestion`, is shaped so
that image bytes never cross a shuffle or a materialised stage boundary: only small
metadata (label records, image ids, shard paths) is grouped or handed between stages,
and each image is read, checked, encoded and written by the same worker. That keeps
the runner's memory flat however many images there are (the DirectRunner holds every
PCollection that crosses a stage boundary in memory) and costs one read per image.

1. ``ListWork``: per unit (a manifest, a label folder, a JSON-lines export, or a
   published MARCO shard), the layout reader's records, and every usable image id.
2. Duplicate ids: ids are grouped; the smallest locator of each id is kept and the
   others are collected as a side input (tiny: only duplicates).
3. ``ToExamples``: per record (or per shard file), read and fully decode the image,
   build the tf.Example, pick its split by a hash of the image id, and emit either a
   serialised example or a quarantine row, plus a counter key.

The rules of steps 1-3 for layout records (which records are refused, and why) live
in :mod:`components.records`, which ``marco sources validate`` runs as well; this
module arranges them in a Beam graph and adds the published shards' own checks.
Every record read gives exactly one example or one quarantine row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components import imagecheck, records
from components.catalogue import Catalogue, NativeLabel, Source
from components.ingestion import tfexample
from components.names import (
    CHANNELS_KEY,
    DEFAULT_EVAL_PERCENT,
    EVAL_SPLIT,
    FORMAT_KEY,
    HEIGHT_KEY,
    IMAGE_ID_KEY,
    IMAGE_KEY,
    IMAGED_AT_KEY,
    INSTITUTION_KEY,
    LABEL_SOURCE_KEY,
    MARCO_ENCODED,
    MARCO_FILENAME,
    MARCO_ID,
    MARCO_LABEL,
    MARCO_RAW,
    MARCO_SOURCE,
    NATIVE_LABEL_KEY,
    OVERRIDE_CLASS_KEY,
    PLATE_KEY,
    SOURCE_PATH_KEY,
    TRAIN_SPLIT,
    WELL_KEY,
    WIDTH_KEY,
    require_data_source,
)
from components.readers import list_units, read_unit
from components.records import (
    CORRUPT_RECORD,
    FROM_CATALOGUE,
    FROM_OVERRIDE,
    LABEL_CONFLICT,
    MISSING_FIELD,
    UNKNOWN_INSTITUTION,
    UNMAPPED_LABEL,
    BadRecord,
    Record,
    duplicate_locators,
    duplicate_refusal,
    id_entry,
)

SPLITS = (TRAIN_SPLIT, EVAL_SPLIT)

QUARANTINE_COLUMNS = ("path", "institution", "reason", "detail", "origin")
QUARANTINE_TAG = "quarantine"
COUNTS_TAG = "counts"
OVERRIDE_TAG = "override"
_IDS_TAG = "ids"
_WORK_TAG = "work"

EXAMPLE_FILE_PREFIX = "data_tfrecord"
QUARANTINE_DIR = "quarantine"
QUARANTINE_PREFIX = "quarantine"
COUNTS_FILE = "ingestion_counts.json"

LAYOUT_UNIT = "layout"
SHARD_UNIT = "marco_shard"
_COUNT_SEP = "\t"


@dataclass(frozen=True)
class IngestionConfig:
    """Everything a worker needs; small and picklable.

    Attributes:
        catalogue: the institutions, their layouts and label mappings.
        data_dir: root of the raw institution folders (None when only shards are read).
        eval_percent: share of image ids, in percent, that go to the eval split.
        max_pixels: images declaring more pixels are quarantined as decompression bombs.
    """

    catalogue: Catalogue
    data_dir: str | None = None
    eval_percent: int = DEFAULT_EVAL_PERCENT
    max_pixels: int = imagecheck.DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not 0 <= self.eval_percent <= 100:
            raise ValueError(f"eval_percent must be within 0-100, got {self.eval_percent}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive, got {self.max_pixels}")


@dataclass(frozen=True)
class WorkUnit:
    """One independently readable piece of input, listed by the driver."""

    kind: str  # LAYOUT_UNIT or SHARD_UNIT
    path: str
    institution: str = ""


@dataclass(frozen=True)
class ShardFile:
    """A published MARCO shard, read whole by one worker in the example stage."""

    path: str


@dataclass(frozen=True)
class Quarantined:
    """One refused input, as written to the quarantine CSV."""

    path: str
    institution: str
    reason: str
    detail: str
    origin: str

    def csv_row(self) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(
            [self.path, self.institution, self.reason, self.detail, self.origin]
        )
        return buffer.getvalue()

    def count_key(self) -> str:
        return _COUNT_SEP.join((QUARANTINE_TAG, self.institution, self.reason))


@dataclass(frozen=True)
class Accepted:
    """One image that made it into the data set."""

    split: str
    example: bytes
    institution: str
    native_label: str
    override_class: str = ""  # the expert's class when an override applied

    def count_key(self) -> str:
        return _COUNT_SEP.join(("example", self.institution, self.native_label, self.split))

    def override_key(self) -> str | None:
        """The counter key of an overridden label, or None."""
        if not self.override_class:
            return None
        return _COUNT_SEP.join((OVERRIDE_TAG, self.institution, self.override_class, self.split))


def parse_count_key(key: str) -> tuple[str, ...]:
    """Inverse of the ``count_key`` methods: ("example", inst, label, split),
    ("quarantine", inst, reason) or ("override", inst, new class, split)."""
    return tuple(key.split(_COUNT_SEP))


def split_for(image_id: str, eval_percent: int) -> str:
    """The split of an image, from a stable hash of its id.

    SHA-256 rather than ``hash()``: Python salts string hashes per process, so the
    same image would move between splits from run to run and between workers.
    """
    bucket = int.from_bytes(hashlib.sha256(image_id.encode("utf-8")).digest()[:8], "big") % 100
    return EVAL_SPLIT if bucket < eval_percent else TRAIN_SPLIT


def list_work_units(
    catalogue: Catalogue,
    data_dir: str | None = None,
    marco_shards: str | None = None,
    institutions: Sequence[str] | None = None,
) -> list[WorkUnit]:
    """List the units to read (driver side: file names only, never records).

    Args:
        catalogue: institutions whose layouts are read from ``data_dir``.
        data_dir: root folder of the raw institution layouts, or None.
        marco_shards: a glob of published MARCO TFRecord shards (local or any Beam
            file system), or None.
        institutions: read only these codes from ``data_dir`` (default: all of the
            catalogue; each must then have data, since a silently absent institution
            would shift the class mix unnoticed).

    Raises:
        FileNotFoundError: when an institution's layout has no data or the shard glob
            matches nothing.
        ValueError: when nothing at all is to be read.
    """
    require_data_source(data_dir, marco_shards)
    units: list[WorkUnit] = []
    if data_dir:
        codes = list(institutions) if institutions else list(catalogue.codes)
        for code in codes:
            source = catalogue.get(code)
            units.extend(
                WorkUnit(LAYOUT_UNIT, unit, code) for unit in list_units(source, data_dir)
            )
    if marco_shards:
        matches = FileSystems.match([marco_shards])[0].metadata_list
        paths = sorted(m.path for m in matches)
        if not paths:
            raise FileNotFoundError(f"marco_shards matches no file: {marco_shards}")
        units.extend(WorkUnit(SHARD_UNIT, path) for path in paths)
    return units


@dataclass(frozen=True)
class _ShardEntry:
    """A shard record resolved through the catalogue, before its image is checked."""

    source: Source
    label: NativeLabel
    image_id: str
    data: bytes
    filename: str


class _Refused(Exception):
    def __init__(self, reason: str, detail: str, institution: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.institution = institution


def _first(features: Mapping[str, list], key: str, default=None):
    values = features.get(key) or []
    return values[0] if values else default


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def resolve_marco_record(
    features: Mapping[str, list],
    sources_by_id: Mapping[int, Source],
    labels_by_raw_id: Mapping[int, tuple[Source, NativeLabel]],
) -> _ShardEntry:
    """Map a published MARCO record's integer ids to (institution, native label).

    The institution comes from ``image/class/source`` and the native label from
    ``image/class/raw``; both must be in the catalogue and agree with each other, and
    the published 4-class ``image/class/label``, when present, must equal the class
    the catalogue gives that label.

    Raises:
        _Refused: with a quarantine reason and a detail naming the offending id.
    """
    source_id = _first(features, MARCO_SOURCE)
    raw_id = _first(features, MARCO_RAW)
    data = _first(features, MARCO_ENCODED)
    if source_id is None:
        raise _Refused(MISSING_FIELD, f"no {MARCO_SOURCE}")
    source = sources_by_id.get(source_id)
    if source is None:
        raise _Refused(
            UNKNOWN_INSTITUTION,
            f"{MARCO_SOURCE}={source_id} is not the marco_source_id of any institution "
            f"(known: {sorted(sources_by_id)})",
        )
    if raw_id is None:
        raise _Refused(MISSING_FIELD, f"no {MARCO_RAW}", source.code)
    owner = labels_by_raw_id.get(raw_id)
    if owner is None or owner[0].code != source.code:
        where = f"belongs to {owner[0].code}" if owner else "is not in the catalogue"
        raise _Refused(
            UNMAPPED_LABEL, f"{MARCO_RAW}={raw_id} {where}, record is from {source.code}",
            source.code,
        )
    label = owner[1]
    published = _first(features, MARCO_LABEL)
    if published is not None and published != label.class_id:
        raise _Refused(
            LABEL_CONFLICT,
            f"{MARCO_LABEL}={published} but the catalogue maps {source.code} "
            f"{label.native!r} to {label.class_id} ({label.class_name})",
            source.code,
        )
    if not data:
        raise _Refused(MISSING_FIELD, f"no {MARCO_ENCODED}", source.code)
    filename = _text(_first(features, MARCO_FILENAME, b""))
    image_id = _text(_first(features, MARCO_ID, b""))
    if not image_id:
        if not filename:
            raise _Refused(MISSING_FIELD, f"neither {MARCO_ID} nor {MARCO_FILENAME}", source.code)
        stem = filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        image_id = f"{source.code}/{stem}"
    return _ShardEntry(source, label, image_id, data, filename)


def iter_shard(path: str) -> Iterator[tuple[int, bytes | None, str]]:
    """(index, record, error) for each record of a shard; the error ends the shard."""
    index = 0
    try:
        with FileSystems.open(path) as handle:
            for record in tfexample.read_tfrecords(handle):
                yield index, record, ""
                index += 1
    except (tfexample.TFRecordError, OSError, EOFError) as exc:
        yield index, None, f"{type(exc).__name__}: {exc}"


def _shard_locator(path: str, index: int) -> str:
    return f"{path}#{index}"


def build_example(
    data: bytes,
    info: imagecheck.ImageInfo,
    *,
    institution: str,
    native_label: str,
    image_id: str,
    source_path: str,
    plate: str = "",
    well: str = "",
    imaged_at: str = "",
    override_class: str = "",
) -> bytes:
    """The project's tf.Example for one image; the bytes are stored exactly as read.

    Optional fields (plate, well, imaging time) are left out rather than stored empty,
    so statistics show how often an institution records them. ``label_source`` says
    ``override`` when ``override_class`` (an expert's class, from the catalogue's
    overrides) replaces the native label's class, ``catalogue`` otherwise.
    """
    features: dict[str, tfexample.FeatureValue] = {
        IMAGE_KEY: data,
        FORMAT_KEY: info.format,
        HEIGHT_KEY: info.height,
        WIDTH_KEY: info.width,
        CHANNELS_KEY: info.channels,
        INSTITUTION_KEY: institution,
        NATIVE_LABEL_KEY: native_label,
        IMAGE_ID_KEY: image_id,
        SOURCE_PATH_KEY: source_path,
        LABEL_SOURCE_KEY: FROM_OVERRIDE if override_class else FROM_CATALOGUE,
    }
    for key, value in ((PLATE_KEY, plate), (WELL_KEY, well), (IMAGED_AT_KEY, imaged_at),
                       (OVERRIDE_CLASS_KEY, override_class)):
        if value:
            features[key] = value
    return tfexample.encode_example(features)


def process_record(
    record: Record | BadRecord,
    config: IngestionConfig,
    duplicates: Mapping[str, str],
) -> Accepted | Quarantined:
    """Turn one layout record into an example or a quarantine entry.

    The verdict is :func:`components.records.judge`'s, the one ``marco sources
    validate`` gives too.
    """
    verdict = records.judge(record, config.catalogue, duplicates, config.max_pixels)
    override = None
    if isinstance(verdict, records.Passed):
        override = records.label_override(record.institution, record.image_id, config.catalogue)
        if isinstance(override, records.Refusal):
            verdict = override
    if isinstance(verdict, records.Refusal):
        return Quarantined(
            record.path, record.institution, verdict.reason, verdict.detail, record.origin
        )
    new_class = override.new_class if override is not None else ""
    split = split_for(record.image_id, config.eval_percent)
    example = build_example(
        verdict.data, verdict.info,
        institution=record.institution,
        native_label=record.native_label,
        image_id=record.image_id,
        source_path=record.path,
        plate=record.plate,
        well=record.well,
        imaged_at=record.imaged_at,
        override_class=new_class,
    )
    return Accepted(split, example, record.institution, record.native_label, new_class)


def process_shard(
    path: str, config: IngestionConfig, duplicates: Mapping[str, str]
) -> Iterator[Accepted | Quarantined]:
    """Turn every record of a published MARCO shard into an example or a quarantine entry."""
    sources_by_id = config.catalogue.by_marco_source_id()
    labels_by_raw_id = config.catalogue.by_marco_raw_id()
    for index, record, error in iter_shard(path):
        locator = _shard_locator(path, index)
        if record is None:
            yield Quarantined(path, "", CORRUPT_RECORD, f"{error}; rest of shard unread",
                              locator)
            return
        try:
            entry = resolve_marco_record(
                tfexample.decode_example(record), sources_by_id, labels_by_raw_id
            )
        except tfexample.ExampleDecodeError as exc:
            yield Quarantined(path, "", CORRUPT_RECORD, f"not a tf.Example: {exc}", locator)
            continue
        except _Refused as exc:
            yield Quarantined(path, exc.institution, exc.reason, exc.detail, locator)
            continue
        code = entry.source.code
        duplicate = duplicate_refusal(locator, entry.image_id, duplicates)
        if duplicate is not None:
            yield Quarantined(path, code, duplicate.reason, duplicate.detail, locator)
            continue
        try:
            info = imagecheck.inspect_image(entry.data, config.max_pixels)
        except imagecheck.BadImage as exc:
            yield Quarantined(path, code, exc.reason, exc.detail, locator)
            continue
        override = records.label_override(code, entry.image_id, config.catalogue)
        if isinstance(override, records.Refusal):
            yield Quarantined(path, code, override.reason, override.detail, locator)
            continue
        new_class = override.new_class if override is not None else ""
        split = split_for(entry.image_id, config.eval_percent)
        example = build_example(
            entry.data, info,
            institution=code,
            native_label=entry.label.native,
            image_id=entry.image_id,
            source_path=locator,
            override_class=new_class,
        )
        yield Accepted(split, example, code, entry.label.native, new_class)


class ListWork(beam.DoFn):
    """Per unit: the work items of the example stage, and the ids of usable records.

    Main output: :class:`Record`, :class:`BadRecord` or :class:`ShardFile`. Tagged
    ``ids``: (image id, locator) of every record whose institution and label are
    known, for duplicate detection. Shards are read once here for their ids only.
    """

    def __init__(self, config: IngestionConfig) -> None:
        self._config = config

    def process(self, unit: WorkUnit) -> Iterator:
        config = self._config
        if unit.kind == LAYOUT_UNIT:
            source = config.catalogue.get(unit.institution)
            for record in read_unit(source, config.data_dir or "", unit.path):
                yield record
                entry = id_entry(record, config.catalogue)
                if entry is not None:
                    yield beam.pvalue.TaggedOutput(_IDS_TAG, entry)
            return
        yield ShardFile(unit.path)
        sources_by_id = config.catalogue.by_marco_source_id()
        labels_by_raw_id = config.catalogue.by_marco_raw_id()
        for index, record, _ in iter_shard(unit.path):
            if record is None:
                return
            try:
                entry = resolve_marco_record(
                    tfexample.decode_example(record), sources_by_id, labels_by_raw_id
                )
            except (tfexample.ExampleDecodeError, _Refused):
                continue
            yield beam.pvalue.TaggedOutput(
                _IDS_TAG, (entry.image_id, _shard_locator(unit.path, index))
            )


class ToExamples(beam.DoFn):
    """Read, check and encode each image; route it to its split or to quarantine."""

    def __init__(self, config: IngestionConfig) -> None:
        self._config = config

    def process(self, item, duplicates: Mapping[str, str]) -> Iterator:
        if isinstance(item, ShardFile):
            outcomes: Iterable = process_shard(item.path, self._config, duplicates)
        else:
            outcomes = (process_record(item, self._config, duplicates),)
        for outcome in outcomes:
            if isinstance(outcome, Accepted):
                yield beam.pvalue.TaggedOutput(outcome.split, outcome.example)
                if outcome.override_key():
                    yield beam.pvalue.TaggedOutput(COUNTS_TAG, outcome.override_key())
            else:
                yield beam.pvalue.TaggedOutput(QUARANTINE_TAG, outcome.csv_row())
            yield beam.pvalue.TaggedOutput(COUNTS_TAG, outcome.count_key())


class IngestImages(beam.PTransform):
    """Pipeline begin -> {"train", "eval": serialised examples, "quarantine": CSV rows,
    "counts": one counter key per input}."""

    def __init__(self, config: IngestionConfig, units: Sequence[WorkUnit]) -> None:
        super().__init__()
        self._config = config
        self._units = list(units)

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        listed = (
            pbegin
            | "ListUnits" >> beam.Create(self._units)
            | "SpreadUnits" >> beam.Reshuffle()
            | "ReadRecords" >> beam.ParDo(ListWork(self._config)).with_outputs(
                _IDS_TAG, main=_WORK_TAG
            )
        )
        duplicates = (
            listed[_IDS_TAG]
            | "GroupIds" >> beam.GroupByKey()
            | "FindDuplicates" >> beam.FlatMap(duplicate_locators)
        )
        # One manifest fans out to thousands of records: without the reshuffle a runner
        # may fuse reading with checking and check a whole manifest on one worker (and
        # the DirectRunner hands a stage's input to its workers in arrival chunks).
        outputs = (
            listed[_WORK_TAG]
            | "SpreadRecords" >> beam.Reshuffle()
            | "ToExamples" >> beam.ParDo(
                ToExamples(self._config), duplicates=beam.pvalue.AsDict(duplicates)
            ).with_outputs(*SPLITS, QUARANTINE_TAG, COUNTS_TAG)
        )
        return {tag: outputs[tag] for tag in (*SPLITS, QUARANTINE_TAG, COUNTS_TAG)}


def _counts_json(counts: Mapping[str, int]) -> str:
    return json.dumps(dict(sorted(counts.items())), indent=1)


class WriteIngestion(beam.PTransform):
    """Write :class:`IngestImages` outputs in the layout of a TFX Examples artifact.

    ``<uri>/Split-<split>/data_tfrecord-*.gz`` (gzipped TFRecords of tf.Examples, as
    TFX's ExampleGen writes them), ``<uri>/quarantine/quarantine-*.csv`` (one row per
    refused input, with a header) and ``<uri>/ingestion_counts.json``. Examples are
    written by the worker that made them, without a reshuffle, so bytes are never
    shuffled.
    """

    def __init__(self, output_uri: str) -> None:
        super().__init__()
        self._uri = output_uri

    def expand(self, outputs: Mapping[str, beam.PCollection]) -> None:
        for split in SPLITS:
            _ = outputs[split] | f"Write{split.title()}" >> beam.io.WriteToTFRecord(
                FileSystems.join(self._uri, f"Split-{split}", EXAMPLE_FILE_PREFIX),
                file_name_suffix=".gz",
            )
        _ = outputs[QUARANTINE_TAG] | "WriteQuarantine" >> beam.io.WriteToText(
            FileSystems.join(self._uri, QUARANTINE_DIR, QUARANTINE_PREFIX),
            file_name_suffix=".csv",
            header=",".join(QUARANTINE_COLUMNS),
        )
        _ = (
            outputs[COUNTS_TAG]
            | "Count" >> beam.combiners.Count.PerElement()
            | "ToDict" >> beam.combiners.ToDict()
            | "ToJson" >> beam.Map(_counts_json)
            | "WriteCounts" >> beam.io.WriteToText(
                FileSystems.join(self._uri, COUNTS_FILE), shard_name_template="", num_shards=1
            )
        )
