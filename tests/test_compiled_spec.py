"""The spec `marco compile` writes, executed task by task as Vertex AI Pipelines and
Kubeflow Pipelines execute it (tests/kfp_harness.py), on the `tiny` preset.

- The Kubeflow Pipelines package, one training replica: the whole DAG runs and
  pushes a model that serves.
- The Vertex AI job, two training replicas (a seeded preset, several training
  files): it trains, exports and pushes; an unchanged re-run reuses everything up to
  the model and pushes nothing new; the run after that is cached throughout; a run
  after adding images re-executes ingestion and everything after it.

Parameters are filled in as `marco submit` fills them (kubeflow.submit).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from click.testing import CliRunner

from pipeline.cli import main as marco
from tests.ingestion_fixtures import make_synthetic
from tests.kfp_harness import LocalVertex, RunResult

# Each test runs the whole pipeline two to four times.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

IMAGE = "europe-west4-docker.pkg.dev/my-gcp-project/marco/marco-tfx@sha256:" + "5e" * 32
IMAGES = 48
INGESTION_ONWARD = ("ImageExampleGen", "StatisticsGen", "ExampleValidator", "AnomalyGate",
                    "Transform", "Trainer", "Evaluator", "Pusher")
UP_TO_THE_MODEL = ("ImageExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
                   "AnomalyGate", "Transform", "Trainer")


def _settings(folder: Path, data: Path, workers: int) -> Path:
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump({
        "project": "my-gcp-project",
        "region": "europe-west4",
        "pipeline_root": str(folder / "root"),
        "image": IMAGE,
        "data_dir": str(data),
        "preset": "tiny",
        "beam_runner": "DirectRunner",
        "training_workers": workers,
    }))
    return path


def _compile(settings: Path, folder: Path) -> tuple[dict, dict]:
    result = CliRunner().invoke(marco, [
        "compile", "--config", str(settings), "--out", str(folder / "job.json"),
        "--kfp-package", str(folder / "package.yaml"),
    ])
    assert result.exit_code == 0, result.output
    return (json.loads((folder / "job.json").read_text()),
            yaml.safe_load((folder / "package.yaml").read_text()))


def _parameters(settings: Path, job: dict) -> dict:
    """What `marco submit` would pass: the data's fingerprint, the served version..."""
    from kubeflow.runner import load_settings
    from kubeflow.submit import submission_parameters

    return submission_parameters(load_settings(settings), job=job)


def _versions(serving: Path) -> list[str]:
    return sorted(p.name for p in serving.iterdir() if p.name.isdigit()) if serving.is_dir() \
        else []


def _pushed(run: RunResult) -> bool:
    return run.artifact("Pusher", "pushed_model")["metadata"].get("pushed") == 1


def _serves(version_dir: Path) -> None:
    from tests.trainer_fixtures import drop_image

    model = tf.saved_model.load(str(version_dir))
    image = drop_image(1, np.random.default_rng(0))
    scores = model.signatures["serving_default"](image_bytes=tf.constant([image]))
    assert scores["scores"].shape == (1, 4)
    assert abs(float(tf.reduce_sum(scores["scores"])) - 1.0) < 1e-4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    make_synthetic(folder, IMAGES)
    return folder


def test_kubeflow_package_one_replica_runs_end_to_end_and_pushes(tmp_path, data):
    settings = _settings(tmp_path, data, workers=1)
    job, package = _compile(settings, tmp_path)
    harness = LocalVertex(tmp_path / "harness")
    # No resolver tasks (the harness refuses them as Kubeflow Pipelines does) and the
    # package's own root, not a cluster default.
    run = harness.run_package(package, _parameters(settings, job))
    assert set(run.executed()) >= set(INGESTION_ONWARD)
    assert _pushed(run)
    serving = tmp_path / "root" / "serving"
    (version,) = _versions(serving)
    _serves(serving / version)
    replicas = sorted(p.name for p in run.tasks["Trainer"].task_dir.glob("replica-*.log"))
    assert replicas == ["replica-workerpool0-0.log"]
    # The run's evaluation is read from the pipeline root alone, without ML Metadata.
    report = CliRunner().invoke(marco, ["report", str(tmp_path / "root"),
                                        "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    assert summary["examples"] > 0, summary


def test_vertex_job_two_replicas_new_data_and_cache(tmp_path, data):
    data = Path(shutil.copytree(data, tmp_path / "data"))
    settings = _settings(tmp_path, data, workers=2)
    job, _ = _compile(settings, tmp_path)
    harness = LocalVertex(tmp_path / "harness")
    serving = tmp_path / "root" / "serving"

    # Two replicas, seeded, on several training files: trained, exported, pushed.
    first = harness.run_job(job, _parameters(settings, job))
    assert set(first.executed()) >= set(INGESTION_ONWARD)
    trainer_dir = first.tasks["Trainer"].task_dir
    assert sorted(p.name for p in trainer_dir.glob("replica-*.log")) == [
        "replica-workerpool0-0.log", "replica-workerpool1-0.log"]
    train_files = list(Path(first.artifact("Transform", "transformed_examples")["uri"])
                       .glob("Split-train/*"))
    assert len(train_files) >= 2, train_files
    assert _pushed(first)
    (version,) = _versions(serving)
    _serves(serving / version)

    # Unchanged, but a model is served now: the baseline and what compares with it run
    # again; the same model is not pushed twice.
    second = harness.run_job(job, _parameters(settings, job))
    assert set(second.cached()) >= set(UP_TO_THE_MODEL)
    assert "ServedModelBaseline" in second.executed()
    assert not _pushed(second)
    assert _versions(serving) == [version]

    # Unchanged again: every task is served from the cache.
    third = harness.run_job(job, _parameters(settings, job))
    assert third.executed() == []
    assert _versions(serving) == [version]

    # New images: ingestion and everything after it run on them.
    # HWMRI keeps one folder per label: a new file there is a new labelled image.
    images = [p for p in sorted((data / "HWMRI" / "clear").rglob("*")) if p.is_file()]
    for number, image in enumerate(images[:3]):
        shutil.copy(image, image.with_name(f"9{number:03d}_20161231-000000{image.suffix}"))
    fourth = harness.run_job(job, _parameters(settings, job))
    assert set(fourth.executed()) >= set(INGESTION_ONWARD)
