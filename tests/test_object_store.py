"""Institution data on an object store (gs:// on Dataflow), here TensorFlow's ram:// one.

The readers, the image check, the work-unit listing, the driver's input fingerprint
and the ingestion Beam stages must all reach a ``scheme://`` data folder through the
file-system layer, never through local ``open``/``glob``/``os.walk``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from components import filesystem, imagecheck
from components.catalogue import load_catalogue
from components.ingestion.beam_stages import (
    EVAL_SPLIT,
    QUARANTINE_TAG,
    TRAIN_SPLIT,
    IngestImages,
    IngestionConfig,
    list_work_units,
)
from components.ingestion.driver import input_fingerprint
from components.names import IMAGE_ID_KEY, SOURCE_PATH_KEY
from components.readers import BadRecord, Record, list_units, read_source
from tests.ingestion_fixtures import drop_pixels, encode, make_synthetic
from tests.test_ingestion import _feature
from tests.test_readers import make_source, split


def _write(url: str, data: bytes | str) -> None:
    tf.io.gfile.makedirs(url.rsplit("/", 1)[0])
    mode = "wb" if isinstance(data, bytes) else "w"
    with tf.io.gfile.GFile(url, mode) as handle:
        handle.write(data)


def _upload(local: Path, url: str) -> None:
    """Copy a local folder tree to ``url``."""
    for path in sorted(local.rglob("*")):
        if path.is_file():
            _write(f"{url}/{path.relative_to(local).as_posix()}", path.read_bytes())


@pytest.fixture
def bucket() -> str:
    """A fresh folder on TensorFlow's in-memory file system."""
    return f"ram://marco-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def png() -> bytes:
    from PIL import Image

    return encode(Image.fromarray(drop_pixels(24, 32)), "PNG")


def test_paths_join_and_split_like_urls():
    assert filesystem.join("gs://b/data", "lab/./m.csv") == "gs://b/data/lab/m.csv"
    assert filesystem.join("gs://b/data/lab", "../img/a.png") == "gs://b/data/img/a.png"
    assert filesystem.join("gs://b/data", "gs://other/x.png") == "gs://other/x.png"
    assert filesystem.join("/local/data", "img/a.png") == "/local/data/img/a.png"
    assert filesystem.parent("gs://b/data/lab/m.csv") == "gs://b/data/lab"
    assert filesystem.name("gs://b/data/clear/") == "clear"
    assert filesystem.relative_to("gs://b/root/clear/P1/a.png", "gs://b/root/clear") == "P1/a.png"


def test_csv_manifest_on_an_object_store(bucket, png):
    _write(f"{bucket}/lab/scores.csv",
           "\ufeffFile;Score\r\nimg/a.png;clear\r\nimg/b.png;xtal\r\n;xtal\r\n")
    _write(f"{bucket}/lab/img/a.png", png)
    source = make_source({"reader": "csv_manifest", "manifest": "lab/*.csv", "delimiter": ";",
                          "columns": {"path": "File", "label": "Score"}})
    assert list_units(source, bucket) == [f"{bucket}/lab/scores.csv"]
    good, bad = split(list(read_source(source, bucket)))
    assert [(r.path, r.native_label, r.image_id) for r in good] == [
        (f"{bucket}/lab/img/a.png", "clear", "LAB/img/a"),
        (f"{bucket}/lab/img/b.png", "xtal", "LAB/img/b"),
    ]
    assert good[0].origin == f"{bucket}/lab/scores.csv:2"
    assert [(b.reason, b.origin.rsplit(":", 1)[1]) for b in bad] == [("missing_field", "4")]
    data, info = imagecheck.read_and_inspect(good[0].path)
    assert data == png and (info.format, info.width, info.height) == ("png", 32, 24)
    with pytest.raises(imagecheck.BadImage) as missing:
        imagecheck.read_and_inspect(good[1].path)
    assert missing.value.reason == imagecheck.MISSING


def test_jsonl_export_on_an_object_store(bucket):
    lines = [json.dumps({"f": "a/1.png", "s": "clear", "id": "x1"}), "{broken"]
    _write(f"{bucket}/exp/export-1.jsonl", "\n".join(lines) + "\n")
    source = make_source({"reader": "jsonl", "files": "exp/export-*.jsonl",
                          "image_root": "images",
                          "fields": {"path": "f", "label": "s", "image_id": "id"}})
    good, bad = split(list(read_source(source, bucket)))
    assert [(r.image_id, r.path) for r in good] == [("x1", f"{bucket}/images/a/1.png")]
    assert [b.reason for b in bad] == ["bad_record"]


def test_folder_per_label_on_an_object_store(bucket, png):
    for rel in ["root/clear/PL9/0001_d3.png", "root/xtal/PL10/0003_d7.PNG",
                "root/xtal/PL9/0002_d3.png", "root/xtal/PL9/notes.txt"]:
        _write(f"{bucket}/{rel}", png)
    source = make_source({"reader": "folder_per_label", "root": "root",
                          "path_pattern": r"^(?P<plate>[^/]+)/(?P<well>\d{4})_"})
    assert list_units(source, bucket) == [f"{bucket}/root/clear", f"{bucket}/root/xtal"]
    good, bad = split(list(read_source(source, bucket)))
    assert not bad
    assert [(r.native_label, r.plate, r.well, r.image_id, r.path) for r in good] == [
        ("clear", "PL9", "0001", "LAB/PL9/0001_d3", f"{bucket}/root/clear/PL9/0001_d3.png"),
        ("xtal", "PL10", "0003", "LAB/PL10/0003_d7", f"{bucket}/root/xtal/PL10/0003_d7.PNG"),
        ("xtal", "PL9", "0002", "LAB/PL9/0002_d3", f"{bucket}/root/xtal/PL9/0002_d3.png"),
    ]


def test_missing_layout_data_names_the_institution(bucket):
    source = make_source({"reader": "folder_per_label", "root": "nowhere"})
    with pytest.raises(FileNotFoundError, match=r"LAB: layout\.root folder ram://"):
        list_units(source, bucket)
    manifest = make_source({"reader": "csv_manifest", "manifest": "m/*.csv",
                            "columns": {"path": "f", "label": "l"}})
    with pytest.raises(FileNotFoundError, match=r"LAB: layout\.manifest matches no file"):
        list_units(manifest, bucket)


def test_an_undecodable_row_is_one_bad_record_and_the_rest_is_read(bucket):
    _write(f"{bucket}/lab/scores.csv", b"File,Score\n\xff\xfe,clear\na.png,clear\n")
    source = make_source({"reader": "csv_manifest", "manifest": "lab/scores.csv",
                          "columns": {"path": "File", "label": "Score"}})
    records = list(read_source(source, bucket))
    assert len(records) == 2 and isinstance(records[0], BadRecord)
    assert records[0].reason == "undecodable_record"
    assert records[0].origin.endswith("scores.csv:2")
    assert not isinstance(records[1], BadRecord) and records[1].path.endswith("lab/a.png")


@pytest.mark.slow
def test_ingestion_reads_every_layout_from_an_object_store(tmp_path, bucket):
    """The synthetic set in all five layouts, ingested from ram:// as from a local disk."""
    local = tmp_path / "data"
    make_synthetic(local, 15)
    data_dir = f"{bucket}/data"
    _upload(local, data_dir)
    catalogue = load_catalogue()
    expected = sorted(
        r.image_id
        for source in catalogue
        for r in read_source(source, local)
        if isinstance(r, Record) and source.class_of(r.native_label) is not None
    )
    units = list_work_units(catalogue, data_dir)
    assert units and all(u.path.startswith(data_dir + "/") for u in units)

    first = input_fingerprint(catalogue, units)
    assert input_fingerprint(catalogue, units) == first
    label_folder = next(
        u.path for u in units if filesystem.isdir(u.path)
    )
    _write(f"{label_folder}/late_arrival.png", b"not yet checked")
    assert input_fingerprint(catalogue, units) != first
    tf.io.gfile.remove(f"{label_folder}/late_arrival.png")

    config = IngestionConfig(catalogue, data_dir)
    with BeamTestPipeline() as pipeline:
        outputs = pipeline | IngestImages(config, units)
        examples = (outputs[TRAIN_SPLIT], outputs[EVAL_SPLIT]) | beam.Flatten()
        ids = examples | "Ids" >> beam.Map(_feature, IMAGE_ID_KEY)
        assert_that(ids, equal_to(expected), label="every image arrives")
        remote = examples | "Remote" >> beam.Map(
            lambda e: _feature(e, SOURCE_PATH_KEY).startswith(data_dir + "/")
        )
        assert_that(remote, equal_to([True] * len(expected)), label="read from the store")
        assert_that(outputs[QUARANTINE_TAG], equal_to([]), label="nothing quarantined")
