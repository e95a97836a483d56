"""The curated schema against the catalogue, and the stop on data outside its domains."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import pytest
from click.testing import CliRunner

from components.anomaly_gate import DataAnomalies, check_anomalies, describe_anomalies
from components.catalogue import load_catalogue
from components.ingestion.beam_stages import (
    EVAL_SPLIT,
    TRAIN_SPLIT,
    IngestImages,
    IngestionConfig,
    WriteIngestion,
    list_work_units,
)
from components.names import IMAGE_KEY, LABEL_KEY, NATIVE_LABEL_KEY
from components.schema_gen import build_schema, render_schema, stale_reason
from pipeline.cli import main
from schemas import SCHEMA_FILE
from tests.ingestion_fixtures import add_institution, make_synthetic


def test_committed_schema_matches_the_catalogue():
    reason = stale_reason(load_catalogue())
    assert reason is None, f"{reason}; run `marco schema update`"


def test_schema_covers_the_example_format():
    import components.names as names

    schema = build_schema(load_catalogue())
    features = {f.name: f for f in schema.feature}
    example_keys = {
        value for key, value in vars(names).items()
        if key.endswith("_KEY") and key != "LABEL_KEY"
    }
    assert set(features) == example_keys
    assert LABEL_KEY not in features
    assert features[IMAGE_KEY].WhichOneof("domain_info") == "image_domain"
    domains = {d.name: list(d.value) for d in schema.string_domain}
    catalogue = load_catalogue()
    assert domains["institution"] == sorted(catalogue.codes)
    assert set(domains["native_label"]) == {n for _, n in catalogue.native_labels()}


def test_catalogue_drift_is_detected_and_fixed_by_one_command(catalogue_copy: Path, tmp_path):
    add_institution(catalogue_copy)
    reason = stale_reason(load_catalogue(catalogue_copy))
    assert reason and "NEWLAB" in reason and "xtal" in reason

    runner = CliRunner()
    stale = runner.invoke(main, ["schema", "check", "--catalogue", str(catalogue_copy)])
    assert stale.exit_code != 0
    assert "NEWLAB" in stale.output and "marco schema update" in stale.output

    schema_file = tmp_path / "schema.pbtxt"
    schema_file.write_text(SCHEMA_FILE.read_text())
    args = ["--catalogue", str(catalogue_copy), "--schema-file", str(schema_file)]
    updated = runner.invoke(main, ["schema", "update", *args])
    assert updated.exit_code == 0, updated.output
    assert schema_file.read_text() == render_schema(load_catalogue(catalogue_copy))
    assert runner.invoke(main, ["schema", "check", *args]).exit_code == 0
    again = runner.invoke(main, ["schema", "update", *args])
    assert "up to date" in again.output


def _validate(uri: str, anomalies_dir: Path) -> dict[str, str]:
    """StatisticsGen + ExampleValidator on an ingested artifact, as TFX runs them."""
    import tensorflow_data_validation as tfdv
    from tfx.utils import io_utils

    from components.statistics import stats_options

    schema = io_utils.SchemaReader().read(str(SCHEMA_FILE))
    split_dirs = {}
    for split in (TRAIN_SPLIT, EVAL_SPLIT):
        options = stats_options()
        options.schema = schema
        stats = tfdv.generate_statistics_from_tfrecord(
            data_location=f"{uri}/Split-{split}/*.gz", stats_options=options
        )
        anomalies = tfdv.validate_statistics(stats, schema)
        split_dir = anomalies_dir / f"Split-{split}"
        split_dir.mkdir(parents=True)
        (split_dir / "SchemaDiff.pb").write_bytes(anomalies.SerializeToString())
        split_dirs[split] = str(split_dir)
    return split_dirs


def _ingest_and_validate(catalogue, tmp_path: Path) -> dict[str, str]:
    """40 synthetic images of ``catalogue``'s institutions ingested and validated against
    the checkout's schema; the anomalies folder of each split."""
    data = tmp_path / "data"
    make_synthetic(data, 40, catalogue=catalogue)
    uri = str(tmp_path / "examples")
    config = IngestionConfig(catalogue, str(data), eval_percent=50)
    with beam.Pipeline() as pipeline:
        _ = pipeline | IngestImages(config, list_work_units(catalogue, str(data))) | (
            WriteIngestion(uri)
        )
    return _validate(uri, tmp_path / "anomalies")


@pytest.mark.slow
def test_new_institution_and_unknown_label_stop_the_run(catalogue_copy: Path, tmp_path: Path):
    """Data engineer adds an institution YAML but does not regenerate the schema."""
    add_institution(catalogue_copy)
    split_dirs = _ingest_and_validate(load_catalogue(catalogue_copy), tmp_path)
    with pytest.raises(DataAnomalies) as raised:
        check_anomalies(split_dirs)
    message = str(raised.value)
    assert "feature 'institution'" in message and "NEWLAB" in message
    assert f"feature '{NATIVE_LABEL_KEY}'" in message and "xtal" in message
    assert "marco schema update" in message


@pytest.mark.slow
def test_data_inside_the_schema_passes_the_gate(tmp_path: Path):
    split_dirs = _ingest_and_validate(load_catalogue(), tmp_path)
    check_anomalies(split_dirs)
    from components.anomaly_gate import read_anomalies

    assert describe_anomalies(read_anomalies(split_dirs[TRAIN_SPLIT])) == []


# --------------------------------------------------------- a catalogue outside the checkout


def _generate_schema(catalogue_dir: str, out: Path, fingerprint: str | None = None):
    """CatalogueSchemaGen's executor, as TFX runs it, into a fresh Schema artifact."""
    from tfx.types import standard_artifacts

    from components.catalogue_schema import Executor

    schema = standard_artifacts.Schema()
    schema.uri = str(out)
    properties = {"catalogue_dir": catalogue_dir}
    if fingerprint:
        properties["catalogue_fingerprint"] = fingerprint
    Executor().Do({}, {"schema": [schema]}, properties)
    return schema


def test_an_outside_catalogue_gets_a_schema_derived_from_it(catalogue_copy: Path, tmp_path):
    import json

    from tfx.utils import io_utils

    from components.catalogue_schema import catalogue_fingerprint

    add_institution(catalogue_copy)
    schema = _generate_schema(str(catalogue_copy), tmp_path / "schema")
    # TFX's components read the one file of the artifact's folder.
    path = io_utils.get_only_uri_in_dir(schema.uri)
    assert Path(path).read_text() == render_schema(load_catalogue(catalogue_copy))
    domains = {d.name: list(d.value) for d in io_utils.SchemaReader().read(path).string_domain}
    assert "NEWLAB" in domains["institution"] and "xtal" in domains["native_label"]
    # Lineage: which catalogue, its content's digest, its institutions and files.
    assert schema.get_string_custom_property("catalogue_dir") == str(catalogue_copy)
    assert schema.get_string_custom_property("catalogue_fingerprint") == \
        catalogue_fingerprint(str(catalogue_copy))
    assert "NEWLAB" in json.loads(schema.get_string_custom_property("institutions"))
    files = json.loads(schema.get_string_custom_property("catalogue_files"))
    assert sorted(files) == sorted(p.name for p in catalogue_copy.glob("*.yaml"))
    # The committed schema stays the project's, and `marco schema check` still holds.
    assert stale_reason(load_catalogue()) is None


def test_an_edited_catalogue_changes_the_cache_key(catalogue_copy: Path):
    from components.catalogue_schema import Driver, catalogue_fingerprint

    first = catalogue_fingerprint(str(catalogue_copy))
    assert Driver.compute(None, {"catalogue_dir": str(catalogue_copy)}) == first
    add_institution(catalogue_copy)
    second = catalogue_fingerprint(str(catalogue_copy))
    assert second != first
    gsk = catalogue_copy / "GSK.yaml"
    gsk.write_text(gsk.read_text() + "\n# reviewed\n")
    assert catalogue_fingerprint(str(catalogue_copy)) not in (first, second)


def test_a_catalogue_in_a_bucket_is_read_where_the_step_runs(catalogue_copy: Path, tmp_path):
    """gs:// on Vertex AI; TensorFlow's ram:// file system here."""
    import uuid

    import tensorflow as tf

    add_institution(catalogue_copy)
    bucket = f"ram://catalogue-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(bucket)
    for path in catalogue_copy.glob("*.yaml"):
        tf.io.gfile.copy(str(path), f"{bucket}/{path.name}")
    schema = _generate_schema(bucket, tmp_path / "schema")
    assert Path(schema.uri, "schema.pbtxt").read_text() == render_schema(
        load_catalogue(catalogue_copy))
    assert schema.get_string_custom_property("catalogue_dir") == bucket


def test_a_run_derives_its_schema_only_from_a_catalogue_outside_the_checkout(
    catalogue_copy: Path, tmp_path: Path
):
    from pipeline.config import PRESETS
    from pipeline.local import local_config
    from pipeline.pipeline import create_pipeline
    from schemas import SOURCES_DIR

    def components(**overrides) -> dict:
        config = local_config(tmp_path / "run", PRESETS["tiny"], data_dir="/data",
                              **overrides)
        return {c.id: c for c in create_pipeline(config, through="validation").components}

    for overrides in ({}, {"catalogue_dir": str(SOURCES_DIR)}):
        found = components(**overrides)
        assert found["ImportSchemaGen"].exec_properties["schema_file"] == str(SCHEMA_FILE)
        assert "CatalogueSchemaGen" not in found
    found = components(catalogue_dir=str(catalogue_copy))
    assert "ImportSchemaGen" not in found
    schema = found["CatalogueSchemaGen"]
    assert schema.exec_properties["catalogue_dir"] == str(catalogue_copy)
    assert found["StatisticsGen"].inputs["schema"].producer_component_id == "CatalogueSchemaGen"
    assert found["AnomalyGate"].exec_properties["catalogue_dir"] == str(catalogue_copy)
    stops = str((tmp_path / "run").resolve() / "stopped-runs")
    assert found["ImageExampleGen"].exec_properties["stop_report_dir"] == stops
    assert found["AnomalyGate"].exec_properties["stop_report_dir"] == stops
    # A curated schema file given with the catalogue is used as it is.
    found = components(catalogue_dir=str(catalogue_copy), schema_file="/curated.pbtxt")
    assert found["ImportSchemaGen"].exec_properties["schema_file"] == "/curated.pbtxt"
