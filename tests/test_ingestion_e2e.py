"""ImageExampleGen through validation and Transform on LocalDagRunner, as a pipeline runs them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from components.catalogue import load_catalogue
from components.ingestion import tfexample
from components.names import IMAGE_ID_KEY, IMAGE_KEY, INSTITUTION_KEY, LABEL_KEY, NATIVE_LABEL_KEY
from schemas import SCHEMA_FILE
from tests.ingestion_fixtures import add_institution, make_synthetic


def build_pipeline(root: Path, data_dir: Path, catalogue_dir: Path, **overrides):
    """The project's graph up to Transform, as a local run builds it."""
    from pipeline.config import PRESETS
    from pipeline.local import local_config, metadata_config
    from pipeline.pipeline import create_pipeline

    config = local_config(root, PRESETS["tiny"], data_dir=str(data_dir), workers=2,
                          catalogue_dir=str(catalogue_dir), eval_percent=20, **overrides)
    return create_pipeline(config, metadata_config(root), through="transform")


def _executions(root: Path) -> tuple[dict[str, list], object]:
    """Node id -> its executions, in order, from ML Metadata; and the store."""
    from ml_metadata.metadata_store import metadata_store

    from pipeline.local import metadata_config

    store = metadata_store.MetadataStore(metadata_config(root))
    result = {}
    for context in store.get_contexts_by_type("node"):
        node = context.name.split(".", 1)[1]
        result[node] = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
    return result, store


def _read_examples(pattern_dir: Path) -> list[dict]:
    out = []
    for path in sorted(pattern_dir.glob("*.gz")):
        with gzip.open(path, "rb") as handle:
            out.extend(tfexample.decode_example(r) for r in tfexample.read_tfrecords(handle))
    return out


@pytest.mark.e2e
@pytest.mark.slow
def test_pipeline_ingests_validates_transforms_and_stops_on_a_stale_schema(
    tmp_path: Path, catalogue_copy: Path
):
    from google.protobuf import json_format
    from ml_metadata.proto import metadata_store_pb2
    from tensorflow_metadata.proto.v0 import statistics_pb2
    from tfx import v1 as tfx

    from components.anomaly_gate import DataAnomalies

    data = tmp_path / "data"
    summary = make_synthetic(data, 60)
    root = tmp_path / "run"
    runner = tfx.orchestration.LocalDagRunner()
    project_catalogue = Path(load_catalogue().sources[0].file).parent
    runner.run(build_pipeline(root, data, project_catalogue))

    executions, store = _executions(root)
    complete = metadata_store_pb2.Execution.COMPLETE
    for node in ("ImageExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
                 "AnomalyGate", "Transform"):
        assert [e.last_known_state for e in executions[node]] == [complete], node

    [examples] = [
        a for a in store.get_artifacts_by_type("Examples") if "ImageExampleGen" in a.uri
    ]
    props = examples.custom_properties
    assert props["num_examples"].int_value == 60
    assert props["num_quarantined"].int_value == 0
    assert props["payload_format"].string_value == "FORMAT_TF_EXAMPLE"
    assert props["input_fingerprint"].string_value
    assert json.loads(props["examples_per_institution"].string_value) == {
        code: facts["images"] for code, facts in summary["institutions"].items()
    }
    per_split = json.loads(props["examples_per_split"].string_value)
    assert sum(per_split.values()) == 60 and per_split["eval"] > 0
    assert json.loads(props["quarantined_per_reason"].string_value) == {}
    assert Path(examples.uri, "quarantine").is_dir()

    [statistics] = store.get_artifacts_by_type("ExampleStatistics")
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        Path(statistics.uri, "Split-train", "FeatureStats.pb").read_bytes()
    )
    slices = {d.name for d in stats.datasets}
    assert {f"institution_{code}" for code in summary["institutions"]} <= slices
    overall = next(d for d in stats.datasets if d.name == "All Examples")
    image = next(f for f in overall.features if f.path.step == [IMAGE_KEY])
    assert image.WhichOneof("stats") == "bytes_stats"  # sizes only, never decoded as text

    [anomalies] = store.get_artifacts_by_type("ExampleAnomalies")
    blessed = json_format.MessageToDict(anomalies.custom_properties["blessed"].struct_value)
    assert blessed == {"train": 1, "eval": 1}

    catalogue = load_catalogue()
    raw = {
        e[IMAGE_ID_KEY][0]: e
        for split in ("train", "eval")
        for e in _read_examples(Path(examples.uri, f"Split-{split}"))
    }
    [transformed] = [
        a for a in store.get_artifacts_by_type("Examples") if "Transform" in a.uri
    ]
    seen = 0
    for split in ("train", "eval"):
        for example in _read_examples(Path(transformed.uri, f"Split-{split}")):
            original = raw[example[IMAGE_ID_KEY][0]]
            code = original[INSTITUTION_KEY][0].decode()
            native = original[NATIVE_LABEL_KEY][0].decode()
            assert example[LABEL_KEY] == [catalogue.class_of(code, native)]
            assert example[IMAGE_KEY] == original[IMAGE_KEY]
            seen += 1
    assert seen == 60

    # Same data, same pipeline: every component comes from the cache.
    runner.run(build_pipeline(root, data, project_catalogue))
    executions, _ = _executions(root)
    cached = metadata_store_pb2.Execution.CACHED
    assert executions["ImageExampleGen"][-1].last_known_state == cached
    assert executions["Transform"][-1].last_known_state == cached

    # A sixth institution's YAML and data, validated against the checkout's curated
    # schema (not updated with `marco schema update`): the run stops at the gate,
    # naming the feature and the values, and Transform never runs. (Without
    # schema_file, an outside catalogue brings its own schema: test_console.py.)
    add_institution(catalogue_copy)
    new_data = tmp_path / "data-with-newlab"
    make_synthetic(new_data, 60, catalogue=load_catalogue(catalogue_copy))
    with pytest.raises(DataAnomalies) as raised:
        runner.run(build_pipeline(root, new_data, catalogue_copy,
                                  schema_file=str(SCHEMA_FILE)))
    message = str(raised.value)
    assert "feature 'institution'" in message and "NEWLAB" in message
    assert "feature 'native_label'" in message and "xtal" in message
    executions, _ = _executions(root)
    assert len(executions["Transform"]) == 2
    assert executions["AnomalyGate"][-1].last_known_state == metadata_store_pb2.Execution.FAILED


def test_input_fingerprint_follows_the_data(tmp_path: Path):
    """The cache key changes when an image is added or a catalogue file is edited."""
    from components.ingestion.beam_stages import list_work_units
    from components.ingestion.driver import input_fingerprint

    make_synthetic(tmp_path / "data", 15)
    catalogue = load_catalogue()

    def fingerprint() -> str:
        return input_fingerprint(catalogue, list_work_units(catalogue, str(tmp_path / "data")))

    first = fingerprint()
    assert fingerprint() == first
    label_folder = next(p for p in (tmp_path / "data" / "HWMRI").iterdir() if p.is_dir())
    (label_folder / "late_arrival.png").write_bytes(b"not yet checked")
    second = fingerprint()
    assert second != first
    edited = tmp_path / "catalogue"
    edited.mkdir()
    for source in catalogue:
        text = source.file.read_text()
        (edited / source.file.name).write_text(text + "\n# reviewed\n")
    catalogue = load_catalogue(edited)
    assert fingerprint() != second


def test_component_rejects_impossible_settings():
    from components.ingestion.component import ImageExampleGen

    with pytest.raises(ValueError, match="data_dir, marco_shards"):
        ImageExampleGen()
    with pytest.raises(ValueError, match="eval_percent"):
        ImageExampleGen("/data", eval_percent=150)
    with pytest.raises(ValueError, match="quarantine_budget"):
        ImageExampleGen("/data", quarantine_budget=5)
    component = ImageExampleGen("/data", marco_shards="gs://bucket/marco/*", institutions=["GSK"])
    assert component.exec_properties["institutions"] == '["GSK"]'
    assert component.exec_properties["quarantine_budget"] == 0.01
