"""Ingestion of published MARCO shards and of the real drop photographs via a CSV manifest."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
import yaml
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from components import imagecheck
from components.catalogue import load_catalogue
from components.ingestion import beam_stages, report, tfexample
from components.ingestion.beam_stages import (
    EVAL_SPLIT,
    QUARANTINE_TAG,
    TRAIN_SPLIT,
    IngestImages,
    IngestionConfig,
    WriteIngestion,
    list_work_units,
)
from components.names import (
    HEIGHT_KEY,
    IMAGE_ID_KEY,
    IMAGE_KEY,
    INSTITUTION_KEY,
    MARCO_ENCODED,
    MARCO_ID,
    NATIVE_LABEL_KEY,
    WIDTH_KEY,
)
from components.records import DUPLICATE_ID, UNMAPPED_LABEL
from tests.ingestion_fixtures import (
    bad_images,
    make_synthetic,
    marco_record,
    odd_images,
    write_shard,
)


def _facts(example: bytes) -> tuple[str, str, str, str]:
    features = tfexample.decode_example(example)
    return (
        features[IMAGE_ID_KEY][0].decode(),
        features[INSTITUTION_KEY][0].decode(),
        features[NATIVE_LABEL_KEY][0].decode(),
        hashlib.sha256(features[IMAGE_KEY][0]).hexdigest(),
    )


def _reason(row: str) -> tuple[str, str]:
    _, _, reason, _, origin = next(csv.reader([row]))
    return origin.rsplit("/", 1)[-1], reason


def _read_shards(folder: Path, pattern: str) -> list[dict]:
    records = []
    for path in sorted(folder.glob(pattern)):
        with path.open("rb") as handle:
            records.extend(tfexample.decode_example(r) for r in tfexample.read_tfrecords(handle))
    return records


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    """Synthetic shards in the published format, plus one shard of planted records."""
    folder = tmp_path_factory.mktemp("shards")
    make_synthetic(folder, 30, fmt="marco-shards", shards=2)
    catalogue = load_catalogue()
    gsk = catalogue.get("GSK")
    raw = {lab.native: lab.marco_raw_id for lab in gsk.labels}
    good = odd_images()["cmyk.jpg"]
    first = _read_shards(folder, "marco-*.tfrecord")[0]
    planted = [
        marco_record(good, 99, raw["clear"], 0, "X/unknown-source"),  # 0 unknown institution
        marco_record(good, gsk.marco_source_id, 0, 0, "GSK/borrowed-label"),  # 1 BMS raw id
        marco_record(good, gsk.marco_source_id, raw["clear"], 1, "GSK/conflict"),  # 2
        marco_record(bad_images()["corrupt.jpg"][0], gsk.marco_source_id, raw["clear"], 0,
                     "GSK/corrupt"),  # 3
        tfexample.encode_example({MARCO_ENCODED: first[MARCO_ENCODED][0],
                                  "image/class/source": first["image/class/source"][0],
                                  "image/class/raw": first["image/class/raw"][0],
                                  MARCO_ID: first[MARCO_ID][0]}),  # 4 duplicate id
        marco_record(good, gsk.marco_source_id, raw["crystals"], 1,
                     filename="plates/extra_drop.jpg"),  # 5 id from the file name
        marco_record(good, None, raw["clear"], 0, "GSK/no-source"),  # 6 missing field
    ]
    write_shard(folder / "planted.tfrecord", planted, tail=b"\x05\x00\x00")
    return folder


@pytest.mark.slow
def test_marco_shards_are_read_as_published(shard_dir: Path):
    catalogue = load_catalogue()
    summary = json.loads((shard_dir / "synth.json").read_text())
    published = _read_shards(shard_dir, "marco-*.tfrecord")
    by_source = {s.marco_source_id: s for s in catalogue}
    by_raw = catalogue.by_marco_raw_id()
    expected = [
        (
            r[MARCO_ID][0].decode(),
            by_source[r["image/class/source"][0]].code,
            by_raw[r["image/class/raw"][0]][1].native,
            hashlib.sha256(r[MARCO_ENCODED][0]).hexdigest(),
        )
        for r in published
    ]
    expected.append(
        ("GSK/extra_drop", "GSK", "crystals", hashlib.sha256(odd_images()["cmyk.jpg"]).hexdigest())
    )
    assert len(published) == summary["images"]
    expected_refusals = [
        ("planted.tfrecord#0", beam_stages.UNKNOWN_INSTITUTION),
        ("planted.tfrecord#1", UNMAPPED_LABEL),
        ("planted.tfrecord#2", beam_stages.LABEL_CONFLICT),
        ("planted.tfrecord#3", imagecheck.CORRUPT),
        ("planted.tfrecord#4", DUPLICATE_ID),
        ("planted.tfrecord#6", beam_stages.MISSING_FIELD),
        ("planted.tfrecord#7", beam_stages.CORRUPT_RECORD),
    ]

    config = IngestionConfig(catalogue)
    units = list_work_units(catalogue, marco_shards=str(shard_dir / "*.tfrecord"))
    assert len(units) == 3
    with BeamTestPipeline() as pipeline:
        outputs = pipeline | IngestImages(config, units)
        examples = (outputs[TRAIN_SPLIT], outputs[EVAL_SPLIT]) | beam.Flatten()
        assert_that(examples | "Facts" >> beam.Map(_facts), equal_to(expected), label="examples")
        assert_that(
            outputs[QUARANTINE_TAG] | "Reasons" >> beam.Map(_reason),
            equal_to(expected_refusals),
            label="quarantine",
        )


@pytest.mark.slow
def test_shards_and_folders_give_the_same_examples(tmp_path: Path):
    """The two sources of one data set agree on institutions, labels and bytes."""
    catalogue = load_catalogue()
    make_synthetic(tmp_path / "folders", 25, seed=3)
    make_synthetic(tmp_path / "shards", 25, seed=3, fmt="marco-shards", shards=1)
    results = {}
    shards = str(tmp_path / "shards" / "*.tfrecord")
    for name, units in (
        ("folders", list_work_units(catalogue, str(tmp_path / "folders"))),
        ("shards", list_work_units(catalogue, marco_shards=shards)),
    ):
        uri = str(tmp_path / f"out-{name}")
        config = IngestionConfig(catalogue, str(tmp_path / "folders"))
        with beam.Pipeline() as pipeline:
            _ = pipeline | IngestImages(config, units) | WriteIngestion(uri)
        results[name] = report.read_summary(uri)
    assert results["folders"].quarantined == results["shards"].quarantined == 0
    assert results["folders"].per_label == results["shards"].per_label
    assert results["folders"].examples == 25


@pytest.mark.slow
def test_real_drops_through_a_csv_manifest(real_drops: Path, tmp_path: Path):
    """The real GSK photographs: eleven arrive as read, the unlabelled one is reported."""
    gsk = yaml.safe_load((Path(load_catalogue().get("GSK").file)).read_text())
    gsk["layout"] = {
        "reader": "csv_manifest",
        "manifest": "labels.csv",
        "columns": {"path": "filename", "label": "label"},
    }
    catalogue_dir = tmp_path / "catalogue"
    catalogue_dir.mkdir()
    (catalogue_dir / "GSK.yaml").write_text(yaml.safe_dump(gsk))
    catalogue = load_catalogue(catalogue_dir)

    with (real_drops / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labelled = [r for r in rows if r["label"]]
    unlabelled = [r for r in rows if not r["label"]]
    assert unlabelled, "the manifest is expected to hold a row without a label"

    uri = str(tmp_path / "artifact")
    # The photographs' folder is the data folder: images are read only inside it.
    config = IngestionConfig(catalogue, str(real_drops))
    units = list_work_units(catalogue, str(real_drops))
    with BeamTestPipeline() as pipeline:
        outputs = pipeline | IngestImages(config, units)
        examples = (outputs[TRAIN_SPLIT], outputs[EVAL_SPLIT]) | beam.Flatten()
        facts = examples | "Facts" >> beam.Map(
            lambda e: (
                _facts(e)[0],
                _facts(e)[2],
                _facts(e)[3],
                tfexample.decode_example(e)[HEIGHT_KEY][0],
                tfexample.decode_example(e)[WIDTH_KEY][0],
            )
        )
        expected = [
            (
                f"GSK/{Path(r['filename']).stem}",
                r["label"],
                hashlib.sha256((real_drops / r["filename"]).read_bytes()).hexdigest(),
                960,
                1280,
            )
            for r in labelled
        ]
        assert_that(facts, equal_to(expected), label="real drops")
        _ = outputs | WriteIngestion(uri)

    summary = report.read_summary(uri)
    assert summary.examples == len(labelled)
    assert summary.per_reason == Counter({beam_stages.MISSING_FIELD: len(unlabelled)})
    quarantined = report.read_quarantine(uri)
    assert [Path(r["path"]).name for r in quarantined] == [r["filename"] for r in unlabelled]
    assert quarantined[0]["detail"] == "empty label"
    assert set(summary.per_split) <= {TRAIN_SPLIT, EVAL_SPLIT}
