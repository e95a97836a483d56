"""The whole pipeline on LocalDagRunner, as `marco run` drives it.

One run folder goes through the life of a real deployment: a run killed during
training and run again (it resumes; nothing is served yet, so there is no baseline),
a rerun with nothing changed (cached; evaluated against the served model, which it
is, so nothing new is pushed), and a worse model (trained for zero steps) that must
not be blessed or pushed.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.names import (
    INSTITUTION_KEY,
    NATIVE_LABEL_KEY,
    SERVING_CLASS_NAMES,
)
from tests.ingestion_fixtures import make_synthetic
from tests.trainer_fixtures import drop_image

TRAIN_STEPS = 150
NODES = ("ImageExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
         "AnomalyGate", "Transform", "Trainer", "ServedModelBaseline", "Evaluator",
         "Pusher")


def _make_learnable(out: Path, images: int) -> None:
    """Synthetic data in every institution's layout, each image redrawn as a pattern
    of its class that a tiny model learns in a few hundred steps: the trained model is
    then reliably better than an untrained one."""
    import io

    from PIL import Image

    from components.catalogue import load_catalogue
    from components.readers import Record, read_source

    make_synthetic(out, images)
    catalogue = load_catalogue()
    rng = np.random.default_rng(11)
    redrawn = 0
    for source in catalogue:
        for record in read_source(source, out):
            assert isinstance(record, Record), record
            label = catalogue.class_of(source.code, record.native_label)
            picture = Image.open(io.BytesIO(drop_image(label, rng)))
            fmt = "PNG" if record.path.lower().endswith(".png") else "JPEG"
            picture.convert("RGB").save(record.path, format=fmt)
            redrawn += 1
    assert redrawn == images


def _marco() -> list[str]:
    return [str(Path(sys.executable).with_name("marco"))]


def _run_args(data: Path, out: Path, steps: int) -> list[str]:
    return ["run", "--data", str(data), "--preset", "tiny", "--out", str(out),
            "--eval-percent", "25", "--workers", "2", "--train-steps", str(steps)]


def _executions(out: Path) -> dict[str, list]:
    from ml_metadata.metadata_store import metadata_store

    from pipeline.local import metadata_config

    store = metadata_store.MetadataStore(metadata_config(out))
    result = {}
    for context in store.get_contexts_by_type("node"):
        node = context.name.split(".", 1)[1]
        result[node] = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
    return result


def _latest_io(out: Path, node: str, key: str, event_type: str):
    """The artifact under ``key`` that the node's latest execution read or wrote."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.types import artifact_utils

    from pipeline.local import metadata_config

    store = metadata_store.MetadataStore(metadata_config(out))
    execution = _executions(out)[node][-1]
    wanted = getattr(metadata_store_pb2.Event, event_type)
    ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
           if e.type == wanted and e.path.steps[0].key == key]
    [artifact] = store.get_artifacts_by_id(ids)
    [artifact_type] = store.get_artifact_types_by_id([artifact.type_id])
    return artifact_utils.deserialize_artifact(artifact_type, artifact)


def _kill_during_training(data: Path, out: Path) -> None:
    """Starts `marco run` and kills it once the Trainer has written a checkpoint."""
    backup = out / "trainer-backup"
    with open(out.parent / "killed-run.log", "wb") as log:
        process = subprocess.Popen(
            _marco() + _run_args(data, out, TRAIN_STEPS), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 900
        try:
            while time.monotonic() < deadline and process.poll() is None:
                if backup.is_dir() and any(p.name == "checkpoint" for p in backup.rglob("*")):
                    break
                time.sleep(0.5)
            assert process.poll() is None, (
                "the run ended before it could be interrupted:\n"
                + (out.parent / "killed-run.log").read_text()[-3000:])
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _example_proto(image: bytes, institution: str, native: str) -> bytes:
    """A raw example as ingestion writes it."""
    from components import names
    from components.imagecheck import inspect_image

    info = inspect_image(image)

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[v.encode() if isinstance(v, str) else v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    features = {
        names.IMAGE_KEY: b(image), names.FORMAT_KEY: b(info.format),
        names.HEIGHT_KEY: i(info.height), names.WIDTH_KEY: i(info.width),
        names.CHANNELS_KEY: i(info.channels), INSTITUTION_KEY: b(institution),
        NATIVE_LABEL_KEY: b(native), names.IMAGE_ID_KEY: b(f"{institution}/probe"),
        names.SOURCE_PATH_KEY: b("probe"),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _probe_images() -> list[bytes]:
    """Three real MARCO photographs where they are kept, else three generated drops:
    the checks below need encoded images of any content, not these in particular."""
    from tests.conftest import REAL_DROPS

    real = sorted(REAL_DROPS.glob("*.jpeg"))[:3]
    if len(real) == 3:
        return [p.read_bytes() for p in real]
    rng = np.random.default_rng(3)
    return [drop_image(label, rng) for label in (0, 1, 3)]


def _check_served_model(version_dir: Path) -> None:
    model = tf.saved_model.load(str(version_dir))
    assert {"serving_default", "probabilities", "serving_examples",
            "transform_features"} <= set(model.signatures)
    images = _probe_images()
    served = model.signatures["serving_default"](image_bytes=tf.constant(images))
    classes = served["classes"].numpy().astype(str)
    assert classes.shape == (3, 4) and all(
        sorted(row) == sorted(SERVING_CLASS_NAMES) for row in classes)
    scores = served["scores"].numpy()
    assert np.all(np.diff(scores, axis=1) <= 0)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    by_bytes = model.signatures["probabilities"](image_bytes=tf.constant(images))
    examples = tf.constant([_example_proto(img, "GSK", "crystals") for img in images])
    by_example = model.signatures["serving_examples"](examples=examples)
    np.testing.assert_allclose(by_bytes["probabilities"].numpy(),
                               by_example["probabilities"].numpy(), rtol=1e-5, atol=1e-6)
    transformed = model.signatures["transform_features"](examples=examples)
    assert transformed["label"].numpy().ravel().tolist() == [1, 1, 1]  # GSK 'crystals'


def _recompute_table4(model_dir: str, examples_uri: str) -> np.ndarray:
    """Table 4 from the model's own predictions on the eval split, without TFMA."""
    from components.ingestion.tfexample import read_tfrecords
    from components.tools.report.tables import normalise_rows, reorder

    model = tf.saved_model.load(model_dir)
    records = []
    for path in sorted(Path(examples_uri, "Split-eval").glob("*.gz")):
        with gzip.open(path, "rb") as handle:
            records.extend(read_tfrecords(handle))
    confusion = np.zeros((4, 4))
    for start in range(0, len(records), 16):
        batch = tf.constant(records[start:start + 16])
        labels = model.signatures["transform_features"](examples=batch)["label"].numpy().ravel()
        scores = model.signatures["serving_examples"](examples=batch)["probabilities"].numpy()
        for label, predicted in zip(labels, scores.argmax(axis=1), strict=True):
            confusion[label, predicted] += 1
    return reorder(normalise_rows(confusion))


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(2400)  # five runs of the whole pipeline
def test_marco_run_resumes_caches_blesses_pushes_and_reports(tmp_path: Path):
    from click.testing import CliRunner
    from ml_metadata.proto import metadata_store_pb2

    from components.tools.report.tables import PAPER_ORDER
    from pipeline.cli import main
    from pipeline.runs import latest_outcome

    data = tmp_path / "data"
    _make_learnable(data, 80)
    out = tmp_path / "run"
    out.mkdir()
    complete = metadata_store_pb2.Execution.COMPLETE
    cached = metadata_store_pb2.Execution.CACHED

    # 1. Killed during training, then run again: it completes, resuming the Trainer.
    _kill_during_training(data, out)
    result = CliRunner().invoke(main, _run_args(data, out, TRAIN_STEPS))
    assert result.exit_code == 0, result.output + repr(result.exception)
    for node in NODES:
        assert re.search(rf"\[\d+/{len(NODES)}\] {node} (done in|reused)", result.output), node
    # Training shows its progress as condensed lines, not Keras' own.
    assert re.search(r"\] Trainer epoch \d+/\d+: loss [\d.]+, accuracy [\d.]+", result.output)
    assert "ms/step" not in result.output
    executions = _executions(out)
    for node in ("ImageExampleGen", "StatisticsGen", "Transform"):
        assert executions[node][-1].last_known_state == cached, node
    for node in ("Trainer", "Evaluator", "Pusher"):
        assert executions[node][-1].last_known_state == complete, node
    [model_run] = [p for p in (out / "pipeline" / "Trainer" / "model_run").iterdir()
                   if (p / "metrics.json").is_file()]
    metrics = json.loads((model_run / "metrics.json").read_text())
    assert 0 < metrics["resumed_from_step"] < TRAIN_STEPS
    # The Trainer's own account reaches run.log: where it resumed, and its image cache.
    run_log = (out / "run.log").read_text()
    resumed = int(metrics["resumed_from_step"])
    assert f"resumed from a preemption checkpoint at step {resumed}" in run_log
    assert "decoded training images in memory" in run_log
    assert not any((out / "trainer-backup").rglob("checkpoint")), "backup kept after success"

    outcome = latest_outcome(out)
    assert outcome.blessed and outcome.pushed
    versions = sorted((out / "serving").iterdir())
    assert len(versions) == 1 and outcome.pushed_to == str(versions[0])
    # Nothing was served before: the baseline was empty and blessing used the floor only.
    first_baseline = _latest_io(out, "Evaluator", "baseline_model", "INPUT")
    assert first_baseline.get_string_custom_property("served_version") == ""
    assert not any(Path(first_baseline.uri).iterdir())
    blessing = _latest_io(out, "Evaluator", "blessing", "OUTPUT")
    assert not blessing.has_custom_property("baseline_model")
    assert f"pushed to {versions[0]}" in result.output
    _check_served_model(versions[0])

    # The report equals TFMA's numbers, and TFMA's equal the model's own predictions.
    report = json.loads((out / "report" / "report.json").read_text())
    assert "report: " + str(out / "report" / "report.md") in result.output
    [raw] = [Path(a) for a in (out / "pipeline" / "ImageExampleGen" / "examples").iterdir()]
    expected = _recompute_table4(outcome.model_uri + "/Format-Serving", str(raw))
    for i, true in enumerate(PAPER_ORDER):
        for j, predicted in enumerate(PAPER_ORDER):
            value = report["table4_confusion_by_true_label"][true][predicted]
            if np.isnan(expected[i, j]):
                assert value is None
            else:
                assert value == pytest.approx(expected[i, j], abs=1e-6), (true, predicted)
    assert sum(facts["examples"] for facts in report["institutions"].values()) == \
        report["examples"]

    # 2. Nothing changed: ingestion, validation, Transform and Trainer come from the cache.
    # The baseline is now the served version, which is this very model: it is blessed
    # against itself and not pushed again.
    result = CliRunner().invoke(main, _run_args(data, out, TRAIN_STEPS))
    assert result.exit_code == 0, result.output
    executions = _executions(out)
    for node in ("ImageExampleGen", "StatisticsGen", "ExampleValidator", "Transform",
                 "Trainer"):
        assert executions[node][-1].last_known_state == cached, node
    for node in ("ServedModelBaseline", "Evaluator", "Pusher"):
        assert executions[node][-1].last_known_state == complete, node
    assert "Trainer reused from cache" in result.output
    baseline = _latest_io(out, "Evaluator", "baseline_model", "INPUT")
    assert baseline.get_string_custom_property("served_version") == versions[0].name
    assert baseline.get_string_custom_property("served_path") == str(versions[0])
    assert baseline.get_string_custom_property("served_model_uri") == outcome.model_uri
    assert (Path(baseline.uri) / "Format-Serving" / "saved_model.pb").is_file()
    blessing = _latest_io(out, "Evaluator", "blessing", "OUTPUT")
    assert blessing.get_string_custom_property("baseline_model") == baseline.uri
    outcome = latest_outcome(out)
    assert outcome.blessed and not outcome.pushed
    assert sorted((out / "serving").iterdir()) == versions
    push = _latest_io(out, "Pusher", "pushed_model", "OUTPUT")
    assert push.get_string_custom_property("served_version") == versions[0].name
    assert push.get_string_custom_property("not_pushed_reason").startswith("already served")
    assert outcome.not_pushed_reason == push.get_string_custom_property("not_pushed_reason")
    assert f"blessed; not pushed ({outcome.not_pushed_reason})" in result.output
    assert f"- Not pushed: {outcome.not_pushed_reason}" in (
        out / "report" / "report.md").read_text()

    # 3. A worse model (no training at all) is compared with the served one and refused.
    result = CliRunner().invoke(main, _run_args(data, out, 0))
    assert result.exit_code == 0, result.output
    assert _executions(out)["ServedModelBaseline"][-1].last_known_state == cached
    blessing = _latest_io(out, "Evaluator", "blessing", "OUTPUT")
    assert blessing.get_string_custom_property("baseline_model") == baseline.uri
    outcome = latest_outcome(out)
    assert outcome.blessed is False and not outcome.pushed
    assert sorted((out / "serving").iterdir()) == versions
    assert "not blessed; nothing pushed" in result.output
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["blessed"] is False and report["threshold_failures"]

    # The report command rebuilds the same report from the run folder.
    result = CliRunner().invoke(main, ["report", str(out), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    run_only = {"preset"}  # known to the run command, not recorded in ML Metadata
    assert {k: v for k, v in again.pop("context").items() if k not in run_only} == {
        k: v for k, v in report.pop("context").items() if k not in run_only}
    assert again == report


def test_pipeline_config_needs_some_data():
    from pipeline.config import PRESETS, PipelineConfig

    with pytest.raises(ValueError, match="data_dir, marco_shards or both"):
        PipelineConfig(pipeline_root="r", preset=PRESETS["tiny"])


def _log_record(message: str) -> logging.LogRecord:
    return logging.LogRecord("absl", logging.INFO, "launcher.py", 1, message, None, None)


def _epoch_record(epoch: int, epochs: int, **logs: float) -> logging.LogRecord:
    from components.names import (
        EPOCH_ATTRIBUTE,
        EPOCH_LOGGER,
        EPOCH_LOGS_ATTRIBUTE,
        EPOCHS_ATTRIBUTE,
    )

    record = logging.LogRecord(EPOCH_LOGGER, logging.INFO, "train.py", 1, "epoch", None, None)
    record.__dict__.update({EPOCH_ATTRIBUTE: epoch, EPOCHS_ATTRIBUTE: epochs,
                            EPOCH_LOGS_ATTRIBUTE: logs})
    return record


def test_progress_condenses_the_trainers_epochs_to_about_ten_per_training():
    from pipeline.local import ProgressHandler

    lines: list[str] = []
    handler = ProgressHandler(list(NODES), lines.append)
    handler.emit(_log_record("Component Trainer is running."))
    for epoch in range(1, 61):
        handler.emit(_epoch_record(epoch, 60, loss=2 - epoch / 60, accuracy=epoch / 100))
    handler.emit(_log_record("Component Trainer is finished."))
    assert lines[0] == "[7/10] Trainer running"
    epochs = [line for line in lines if " epoch " in line]
    assert epochs[0] == "[7/10] Trainer epoch 6/60: loss 1.900, accuracy 0.060"
    assert epochs[-1] == "[7/10] Trainer epoch 60/60: loss 1.000, accuracy 0.600"
    assert len(epochs) == 10
    assert re.fullmatch(r"\[7/10\] Trainer done in \d+ s", lines[-1])
    # Keras' own epoch text is not read; epochs outside a component, or a record
    # that counts no epochs, are ignored.
    lines.clear()
    ProgressHandler(list(NODES), lines.append).emit(_epoch_record(1, 60, loss=1.0))
    odd = ProgressHandler(list(NODES), lines.append)
    odd.emit(_log_record("Component Trainer is running."))
    lines.clear()
    odd.emit(_log_record("Epoch 1/1"))
    odd.emit(_log_record("42/42 - 7s - loss: 1.0 - accuracy: 0.5"))
    odd.emit(_epoch_record(1, 0, loss=1.0))
    assert lines == []


def test_the_trainers_epoch_reporter_logs_what_the_progress_lines_need(caplog):
    import tensorflow as tf

    from components.names import EPOCH_LOGGER
    from components.trainer.train import EpochReporter
    from pipeline.local import ProgressHandler

    model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(2)])
    model.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    caplog.set_level(logging.INFO, logger="components")  # as marco run sets it
    lines: list[str] = []
    handler = ProgressHandler(list(NODES), lines.append)
    handler.emit(_log_record("Component Trainer is running."))
    logging.getLogger(EPOCH_LOGGER).addHandler(handler)
    try:
        model.fit(tf.zeros((4, 2)), tf.constant([0, 1, 0, 1]), epochs=3, verbose=0,
                  callbacks=[EpochReporter()])
    finally:
        logging.getLogger(EPOCH_LOGGER).removeHandler(handler)
    assert [line.split(":")[0] for line in lines[1:]] == [
        f"[7/10] Trainer epoch {n}/3" for n in (1, 2, 3)]
    assert re.fullmatch(r".*: loss \d+\.\d{3}, accuracy 0\.500", lines[-1])
