"""Transform's label collapse: the catalogue's mapping, applied to ingested examples."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from components.catalogue import Catalogue, load_catalogue
from components.ingestion import tfexample
from components.ingestion.beam_stages import (
    IngestImages,
    IngestionConfig,
    WriteIngestion,
    list_work_units,
)
from components.names import (
    IMAGE_ID_KEY,
    IMAGE_KEY,
    INSTITUTION_KEY,
    LABEL_KEY,
    NATIVE_LABEL_KEY,
)
from components.transform import UNMAPPED, collapse_labels, label_table, preprocessing_fn
from schemas import SCHEMA_FILE
from tests.ingestion_fixtures import make_synthetic


def test_every_catalogue_row_maps_to_its_class():
    import tensorflow as tf

    catalogue = load_catalogue()
    rows = catalogue.mapping_rows()
    table = label_table(catalogue)
    institutions = tf.constant([[code] for code, _, _ in rows])
    natives = tf.constant([[native] for _, native, _ in rows])
    labels = collapse_labels(institutions, natives, table).numpy()
    assert labels.shape == (len(rows), 1)
    assert labels[:, 0].tolist() == [class_id for _, _, class_id in rows]
    # A word of another institution, an unknown word, an unknown institution.
    odd = collapse_labels(
        tf.constant(["GSK", "BMS", "NEWLAB"]), tf.constant(["Crystal", "needles", "clear"]), table
    ).numpy()
    assert odd.tolist() == [UNMAPPED] * 3


def test_transform_reads_a_catalogue_in_a_bucket(tmp_path):
    """Vertex AI passes a gs:// catalogue_dir to Transform (TensorFlow's ram:// file
    system stands in): its own catalogue is the one that labels, here one without GSK,
    and a broken file is named at its remote path."""
    import uuid

    import tensorflow as tf

    from components.catalogue import CatalogueError
    from schemas import SOURCES_DIR

    bucket = f"ram://catalogue-{uuid.uuid4().hex}/sources"
    tf.io.gfile.makedirs(bucket)
    for path in SOURCES_DIR.glob("*.yaml"):
        if path.stem != "GSK":
            tf.io.gfile.copy(str(path), f"{bucket}/{path.name}")
    rows = load_catalogue().mapping_rows()
    gsk = next(row for row in rows if row[0] == "GSK")
    bms = next(row for row in rows if row[0] == "BMS")
    inputs = {
        IMAGE_KEY: tf.constant([[b"a"], [b"b"]]),
        IMAGE_ID_KEY: tf.constant([["GSK/1"], ["BMS/1"]]),
        INSTITUTION_KEY: tf.constant([[gsk[0]], [bms[0]]]),
        NATIVE_LABEL_KEY: tf.constant([[gsk[1]], [bms[1]]]),
    }
    labels = preprocessing_fn(inputs, {"catalogue_dir": bucket})[LABEL_KEY].numpy()
    assert labels[:, 0].tolist() == [UNMAPPED, bms[2]]
    assert preprocessing_fn(inputs)[LABEL_KEY].numpy()[:, 0].tolist() == [gsk[2], bms[2]]

    with tf.io.gfile.GFile(f"{bucket}/BMS.yaml", "w") as handle:
        handle.write("code: [unclosed\n")
    with pytest.raises(CatalogueError, match=f"^{bucket}/BMS.yaml"):
        load_catalogue(bucket)


@pytest.mark.slow
def test_transform_output_on_folders_and_shards(tmp_path: Path):
    """Labels right per institution and image bytes byte-identical, from both sources."""
    import tensorflow_transform.beam as tft_beam
    from tfx.utils import io_utils
    from tfx_bsl.public import tfxio

    catalogue = load_catalogue()
    # Raw folders for two institutions, published shards for the other three.
    in_folders = ("GSK", "HWMRI")
    folders, shards = tmp_path / "folders", tmp_path / "shards"
    make_synthetic(folders, 12, catalogue=Catalogue(tuple(catalogue.get(c) for c in in_folders)))
    make_synthetic(
        shards, 12, fmt="marco-shards", shards=1,
        catalogue=Catalogue(tuple(s for s in catalogue if s.code not in in_folders)),
    )
    uri = str(tmp_path / "examples")
    units = list_work_units(catalogue, str(folders), str(shards / "*.tfrecord"), in_folders)
    config = IngestionConfig(catalogue, str(folders))
    with beam.Pipeline() as pipeline:
        _ = pipeline | IngestImages(config, units) | WriteIngestion(uri)

    import gzip

    expected = []
    files = sorted(str(p) for p in Path(uri).glob("Split-*/*.gz"))
    for path in files:
        with gzip.open(path, "rb") as handle:
            for record in tfexample.read_tfrecords(handle):
                features = tfexample.decode_example(record)
                code = features[INSTITUTION_KEY][0].decode()
                native = features[NATIVE_LABEL_KEY][0].decode()
                expected.append(
                    (
                        features[IMAGE_ID_KEY][0].decode(),
                        code,
                        catalogue.class_of(code, native),
                        hashlib.sha256(features[IMAGE_KEY][0]).hexdigest(),
                    )
                )
    assert len(expected) == 24
    assert {e[1] for e in expected} == set(catalogue.codes)

    schema = io_utils.SchemaReader().read(str(SCHEMA_FILE))
    source = tfxio.TFExampleRecord(file_pattern=files, schema=schema)

    def facts(instance):
        return (
            instance[IMAGE_ID_KEY][0].decode(),
            instance[INSTITUTION_KEY][0].decode(),
            int(instance[LABEL_KEY][0]),
            hashlib.sha256(instance[IMAGE_KEY][0]).hexdigest(),
        )

    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path / "tft")):
        raw = pipeline | source.BeamSource()
        (transformed, _), _ = (raw, source.TensorAdapterConfig()) | (
            tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
        )
        assert_that(transformed | beam.Map(facts), equal_to(expected))
