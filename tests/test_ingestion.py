"""ImageExampleGen's Beam stages without TFX: routing, splits, quarantine and counts."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
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
    split_for,
)
from components.names import (
    CHANNELS_KEY,
    FORMAT_KEY,
    HEIGHT_KEY,
    IMAGE_ID_KEY,
    IMAGE_KEY,
    INSTITUTION_KEY,
    NATIVE_LABEL_KEY,
    PLATE_KEY,
    SOURCE_PATH_KEY,
    WELL_KEY,
    WIDTH_KEY,
)
from components.readers import Record, read_source
from components.records import DUPLICATE_ID
from tests.ingestion_fixtures import PlantedSet, make_planted_set, odd_images


def _feature(example: bytes, key: str):
    values = tfexample.decode_example(example).get(key, [])
    value = values[0] if values else None
    return value.decode("utf-8") if isinstance(value, bytes) and key != IMAGE_KEY else value


def _reason_of(row: str) -> tuple[str, str]:
    path, _, reason, _, _ = next(csv.reader([row]))
    return path, reason


def expected_ids(planted: PlantedSet) -> set[str]:
    """Image ids that must arrive: every mapped, readable record, each id once (a set, so
    a duplicated id counts once whichever copy is kept)."""
    ids = set()
    for source in planted.catalogue:
        for record in read_source(source, planted.data_dir):
            refused = planted.expected_quarantine.get(record.path)
            if (
                isinstance(record, Record)
                and refused in (None, DUPLICATE_ID)
                and source.class_of(record.native_label) is not None
            ):
                ids.add(record.image_id)
    return ids


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> PlantedSet:
    return make_planted_set(tmp_path_factory.mktemp("planted") / "data")


@pytest.fixture(scope="module")
def ingested(planted: PlantedSet, tmp_path_factory) -> str:
    """The planted set, ingested once and written in the artifact layout."""
    uri = str(tmp_path_factory.mktemp("artifact"))
    config = IngestionConfig(planted.catalogue, str(planted.data_dir))
    units = list_work_units(planted.catalogue, str(planted.data_dir))
    with beam.Pipeline() as pipeline:
        _ = pipeline | IngestImages(config, units) | WriteIngestion(uri)
    return uri


def test_example_codec_matches_tensorflow():
    import tensorflow as tf

    features = {
        "bytes": b"\x00\xff\x10",
        "text": "crystals + precipitate",
        "ints": [0, 1, -5, 2**40],
        "floats": [0.5, -2.25],
        "empty_list": [],
    }
    parsed = tf.train.Example.FromString(tfexample.encode_example(features))
    feature = parsed.features.feature
    assert feature["bytes"].bytes_list.value == [b"\x00\xff\x10"]
    assert feature["text"].bytes_list.value == [b"crystals + precipitate"]
    assert list(feature["ints"].int64_list.value) == [0, 1, -5, 2**40]
    assert list(feature["floats"].float_list.value) == [0.5, -2.25]
    assert len(feature) == 5

    written = tf.train.Example(
        features=tf.train.Features(
            feature={
                "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"bc"])),
                "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[7, -1])),
                "f": tf.train.Feature(float_list=tf.train.FloatList(value=[1.5])),
            }
        )
    ).SerializeToString()
    assert tfexample.decode_example(written) == {"b": [b"a", b"bc"], "i": [7, -1], "f": [1.5]}
    with pytest.raises(tfexample.ExampleDecodeError):
        tfexample.decode_example(written[:-3])


def test_tfrecords_written_by_tensorflow_read_back_and_damage_is_refused(tmp_path: Path):
    import tensorflow as tf

    records = [b"first", b"", b"x" * 70_000]
    theirs = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in records:
            writer.write(record)
    with theirs.open("rb") as handle:
        assert list(tfexample.read_tfrecords(handle)) == records

    written = theirs.read_bytes()
    damaged = bytearray(written)
    damaged[-100] ^= 0xFF  # inside the last record's data
    for name, content in (("damaged", bytes(damaged)), ("truncated", written[:-10])):
        (tmp_path / name).write_bytes(content)
        with (tmp_path / name).open("rb") as handle:
            read = []
            with pytest.raises(tfexample.TFRecordError, match="Not a valid TFRecord"):
                read.extend(tfexample.read_tfrecords(handle))
        assert read == records[:2], name  # the records before the damage


def test_split_is_a_stable_hash_of_the_image_id():
    ids = [f"GSK/plate{i // 96}_{i % 96:02d}" for i in range(5000)]
    splits = [split_for(i, 10) for i in ids]
    assert 0.08 < splits.count(EVAL_SPLIT) / len(ids) < 0.12
    assert {split_for(i, 0) for i in ids} == {TRAIN_SPLIT}
    assert {split_for(i, 100) for i in ids} == {EVAL_SPLIT}
    # Same answer in another interpreter with another string-hash salt.
    code = (
        "import json, sys; from components.ingestion.beam_stages import split_for; "
        "print(json.dumps([split_for(i, 10) for i in json.load(sys.stdin)]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(ids[:300]),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert json.loads(result.stdout) == splits[:300]


@pytest.mark.slow
def test_planted_inputs_are_quarantined_and_good_images_arrive(planted: PlantedSet):
    ids = expected_ids(planted)
    train = sorted(i for i in ids if split_for(i, 10) == TRAIN_SPLIT)
    evaluation = sorted(i for i in ids if split_for(i, 10) == EVAL_SPLIT)
    assert len(ids) == planted.expected_examples
    assert train and evaluation
    odd_ids = {f"GSK/{Path(name).stem}": data for name, data in odd_images().items()}
    expected_odd = []
    for image_id, data in odd_ids.items():
        info = imagecheck.inspect_image(data)
        expected_odd.append((image_id, hashlib.sha256(data).hexdigest(), info.format,
                             info.channels, info.height, info.width))

    config = IngestionConfig(planted.catalogue, str(planted.data_dir))
    units = list_work_units(planted.catalogue, str(planted.data_dir))
    with BeamTestPipeline() as pipeline:
        outputs = pipeline | IngestImages(config, units)
        train_ids = outputs[TRAIN_SPLIT] | "TrainIds" >> beam.Map(_feature, IMAGE_ID_KEY)
        eval_ids = outputs[EVAL_SPLIT] | "EvalIds" >> beam.Map(_feature, IMAGE_ID_KEY)
        assert_that(train_ids, equal_to(train), label="train ids")
        assert_that(eval_ids, equal_to(evaluation), label="eval ids")
        refused = outputs[QUARANTINE_TAG] | "Reasons" >> beam.Map(_reason_of)
        assert_that(
            refused, equal_to(sorted(planted.expected_quarantine.items())), label="quarantine"
        )
        odd = (
            (outputs[TRAIN_SPLIT], outputs[EVAL_SPLIT])
            | "All" >> beam.Flatten()
            | "OddOnes" >> beam.Filter(lambda e: _feature(e, IMAGE_ID_KEY) in odd_ids)
            | "OddFacts" >> beam.Map(
                lambda e: (
                    _feature(e, IMAGE_ID_KEY),
                    hashlib.sha256(_feature(e, IMAGE_KEY)).hexdigest(),
                    _feature(e, FORMAT_KEY),
                    _feature(e, CHANNELS_KEY),
                    _feature(e, HEIGHT_KEY),
                    _feature(e, WIDTH_KEY),
                )
            )
        )
        assert_that(odd, equal_to(expected_odd), label="odd images kept as read")


def test_odd_images_decode_to_rgb_in_tensorflow():
    """Why CMYK, 16-bit, grey, RGBA and palette images are kept as read, not re-encoded."""
    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from tests.ingestion_fixtures import encode

    for name, data in odd_images().items():
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
        assert decoded.shape == (48, 64, 3), name
        image = Image.open(io.BytesIO(data))
        if image.mode == "I;16":
            expected = (np.asarray(image, dtype=np.float64) / 257).round()
            expected = np.repeat(expected[..., None], 3, axis=-1)
        else:
            expected = np.asarray(image.convert("RGB"), dtype=np.float64)
        assert np.abs(decoded - expected).mean() < 2.0, name
    # The CMYK case is not trivially right: a colour must survive TF's conversion.
    red = encode(Image.new("RGB", (16, 16), (200, 30, 30)).convert("CMYK"), "JPEG", quality=95)
    pixel = tf.io.decode_jpeg(red, channels=3).numpy()[8, 8]
    assert np.abs(pixel.astype(int) - [200, 30, 30]).max() <= 3


def test_images_in_other_formats_are_refused_naming_the_stored_formats():
    """Examples store the bytes as read: a TIFF (or GIF, BMP) is refused, never converted."""
    from PIL import Image

    from tests.ingestion_fixtures import drop_pixels, encode

    image = Image.fromarray(drop_pixels())
    for fmt in ("TIFF", "GIF", "BMP"):
        with pytest.raises(imagecheck.BadImage) as refused:
            imagecheck.inspect_image(encode(image, fmt))
        assert refused.value.reason == imagecheck.UNSUPPORTED_FORMAT, fmt
        assert refused.value.detail.startswith(f"{fmt} is not JPEG or PNG: "), fmt
        assert "convert the image to PNG" in refused.value.detail
    for fmt in ("JPEG", "PNG"):
        assert imagecheck.inspect_image(encode(image, fmt)).format == fmt.lower()


@pytest.mark.slow
def test_artifact_counts_and_quarantine_files(planted: PlantedSet, ingested: str):
    summary = report.read_summary(ingested)
    assert summary.examples == planted.expected_examples
    assert summary.per_reason == Counter(planted.expected_quarantine.values())
    synth = json.loads((planted.data_dir / "synth.json").read_text())
    expected_per_institution = {
        code: facts["images"] for code, facts in synth["institutions"].items()
    }
    expected_per_institution["GSK"] += len(planted.odd)
    assert dict(summary.per_institution) == expected_per_institution
    assert summary.per_label["GSK/crystals"] >= len(planted.odd)
    assert set(summary.per_split) == {TRAIN_SPLIT, EVAL_SPLIT}

    rows = report.read_quarantine(ingested)
    assert {r["path"]: r["reason"] for r in rows} == planted.expected_quarantine
    assert all(r["institution"] in ("GSK", "HWMRI") and r["origin"] for r in rows)
    for path in report.quarantine_files(ingested):
        with open(path, encoding="utf-8") as handle:
            assert handle.readline().strip() == "path,institution,reason,detail,origin"
    for split in (TRAIN_SPLIT, EVAL_SPLIT):
        assert list(Path(ingested, f"Split-{split}").glob("data_tfrecord-*.gz"))


@pytest.mark.slow
def test_examples_carry_the_layout_metadata(planted: PlantedSet, ingested: str):
    import gzip

    examples = []
    for path in sorted(Path(ingested).glob("Split-*/data_tfrecord-*.gz")):
        with gzip.open(path, "rb") as handle:
            examples.extend(tfexample.decode_example(r) for r in tfexample.read_tfrecords(handle))
    assert len(examples) == planted.expected_examples
    records = {
        r.path: r
        for source in planted.catalogue
        for r in read_source(source, planted.data_dir)
        if isinstance(r, Record)
    }
    assert len({e[IMAGE_ID_KEY][0] for e in examples}) == len(examples)
    for example in examples:
        record = records[example[SOURCE_PATH_KEY][0].decode()]
        assert example[IMAGE_ID_KEY] == [record.image_id.encode()]
        assert example[INSTITUTION_KEY] == [record.institution.encode()]
        assert example[NATIVE_LABEL_KEY] == [record.native_label.encode()]
        for key, value in ((PLATE_KEY, record.plate), (WELL_KEY, record.well)):
            if value:
                assert example[key] == [value.encode()]
            else:
                assert key not in example
        with open(record.path, "rb") as handle:
            assert example[IMAGE_KEY] == [handle.read()]
        info = imagecheck.inspect_image(example[IMAGE_KEY][0])
        assert (example[HEIGHT_KEY], example[WIDTH_KEY]) == ([info.height], [info.width])
        assert "label" not in example


@pytest.mark.slow
def test_budget_failure_names_reasons_and_paths(planted: PlantedSet, ingested: str):
    summary = report.read_summary(ingested)
    with pytest.raises(report.QuarantineBudgetExceeded) as raised:
        report.check_budget(summary, 0.01, ingested)
    message = str(raised.value)
    assert f"{summary.quarantined} of {summary.examples + summary.quarantined} inputs" in message
    for reason, count in Counter(planted.expected_quarantine.values()).items():
        assert f"  {reason}: {count}" in message
    for path in planted.expected_quarantine:
        assert path in message
    report.check_budget(summary, 0.5, ingested)


def test_an_institution_without_data_is_an_error(tmp_path: Path):
    from tests.ingestion_fixtures import make_synthetic

    make_synthetic(tmp_path / "data", 20)
    for folder in (tmp_path / "data" / "MERCK").iterdir():
        if folder.suffix == ".jsonl":
            folder.unlink()
    catalogue = load_catalogue()
    with pytest.raises(FileNotFoundError, match="MERCK"):
        list_work_units(catalogue, str(tmp_path / "data"))
    units = list_work_units(catalogue, str(tmp_path / "data"), institutions=["GSK", "BMS"])
    assert {u.institution for u in units} == {"GSK", "BMS"}
    with pytest.raises(ValueError, match="nothing to ingest"):
        list_work_units(catalogue)


def test_config_rejects_bad_values():
    catalogue = load_catalogue()
    with pytest.raises(ValueError, match="eval_percent"):
        IngestionConfig(catalogue, "/data", eval_percent=101)
    with pytest.raises(ValueError, match="max_pixels"):
        IngestionConfig(catalogue, "/data", max_pixels=0)


def test_max_pixels_is_configurable(planted: PlantedSet):
    """A stricter pixel limit quarantines ordinary images as decompression bombs."""
    gsk = load_catalogue().get("GSK")
    record = next(
        r for r in read_source(gsk, planted.data_dir)
        if isinstance(r, Record) and r.path.endswith("grey.png")
    )
    strict = IngestionConfig(planted.catalogue, str(planted.data_dir), max_pixels=1000)
    outcome = beam_stages.process_record(record, strict, {})
    assert isinstance(outcome, beam_stages.Quarantined)
    assert outcome.reason == imagecheck.TOO_LARGE
    relaxed = IngestionConfig(planted.catalogue, str(planted.data_dir))
    assert isinstance(beam_stages.process_record(record, relaxed, {}), beam_stages.Accepted)
