"""The Evaluator's blessing rule, run through TFMA itself on stored predictions.

TFMA evaluates the examples' own ``probabilities`` feature here (no model), with the
project's EvalConfig otherwise unchanged: the same metrics, slices and thresholds.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma

from components.evaluation import ACCURACY, eval_config
from components.names import CLASS_NAMES, INSTITUTION_KEY, LABEL_KEY, NUM_CLASSES
from components.tools.report.results import load_results


def _example(label: int, predicted: int, institution: str, top: float = 0.9) -> bytes:
    probabilities = np.full(NUM_CLASSES, (1 - top) / (NUM_CLASSES - 1), np.float32)
    probabilities[predicted] = top
    feature = {
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "probabilities": tf.train.Feature(
            float_list=tf.train.FloatList(value=probabilities.tolist())
        ),
        INSTITUTION_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[institution.encode()])
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _predictions_only(config):
    """The project's EvalConfig, reading predictions from the examples instead of a model.

    Without a baseline model TFMA refuses change thresholds outside TFX (the Evaluator
    rubber-stamps a first model); they are dropped here and tested end to end in
    test_pipeline_e2e (a worse model is not blessed).
    """
    config.model_specs[0].ClearField("signature_name")
    config.model_specs[0].ClearField("preprocessing_function_names")
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            metric.threshold.ClearField("change_threshold")
            for per_slice in metric.per_slice_thresholds:
                per_slice.threshold.ClearField("change_threshold")
    return config


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> str:
    """40 examples from BIG (38 right, 2 wrong) and 4 from SMALL (2 right, 2 wrong)."""
    path = tmp_path_factory.mktemp("eval") / "examples.tfrecord"
    rng = np.random.default_rng(3)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(40):
            label = int(rng.integers(NUM_CLASSES))
            writer.write(_example(label, label if i >= 2 else (label + 1) % 4, "BIG"))
        for i in range(4):
            writer.write(_example(i, i if i < 2 else (i + 1) % 4, "SMALL"))
    return str(path)


def _validate(examples: str, out, floor: float):
    config = _predictions_only(eval_config(accuracy_floor=floor))
    tfma.run_model_analysis(
        eval_shared_model=None, eval_config=config, data_location=examples,
        output_path=str(out),
    )
    result = tfma.load_eval_result(str(out))
    accuracy = {
        dict(key).get(INSTITUTION_KEY, "overall"): value[""][""][ACCURACY]["doubleValue"]
        for key, value in result.slicing_metrics
    }
    return tfma.load_validation_result(str(out)), accuracy


@pytest.mark.slow
def test_floor_applies_to_the_overall_slice_not_to_each_institution(examples, tmp_path):
    validation, accuracy = _validate(examples, tmp_path / "blessed", floor=0.8)
    assert accuracy["overall"] == pytest.approx(40 / 44)
    assert accuracy["SMALL"] == pytest.approx(0.5)  # under the floor, computed...
    assert validation.validation_ok, validation  # ...and not a veto

    validation, _ = _validate(examples, tmp_path / "refused", floor=0.95)
    assert not validation.validation_ok
    failed = validation.metric_validations_per_slice
    assert len(failed) == 1 and not failed[0].slice_key.single_slice_keys
    assert failed[0].failures[0].metric_key.name == ACCURACY


@pytest.mark.slow
def test_per_class_precision_and_recall_count_the_highest_score(tmp_path):
    """A class is predicted when it scores highest, even below 0.5 (as in Table 4)."""
    pairs = [(0, 0), (0, 0), (0, 1), (1, 1), (2, 2), (2, 0), (3, 3), (3, 3)]
    path = tmp_path / "examples.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for label, predicted in pairs:
            writer.write(_example(label, predicted, "BIG", top=0.4))
    config = _predictions_only(eval_config(accuracy_floor=0.0))
    tfma.run_model_analysis(eval_shared_model=None, eval_config=config,
                            data_location=str(path), output_path=str(tmp_path / "out"))
    overall = load_results(tmp_path / "out").overall
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES))
    for label, predicted in pairs:
        confusion[label, predicted] += 1
    np.testing.assert_array_equal(overall.confusion, confusion)
    for index, name in enumerate(CLASS_NAMES):
        right = confusion[index, index]
        assert overall.recall[name] == pytest.approx(right / confusion[index].sum()), name
        assert overall.precision[name] == pytest.approx(right / confusion[:, index].sum()), name


def _baseline(served_version: str | None):
    from tfx.types import standard_artifacts

    model = standard_artifacts.Model()
    model.uri = "/baseline"
    if served_version is not None:
        model.set_string_custom_property("served_version", served_version)
    return model


@pytest.mark.parametrize(("served_version", "kept"), [("", False), ("1700000000", True)])
def test_evaluator_drops_an_empty_baseline_before_tfx_evaluates(
    monkeypatch, served_version, kept
):
    """Nothing served: TFX's Evaluator runs without a baseline (no change threshold)."""
    from tfx.components.evaluator import executor as tfx_evaluator

    from components.evaluation import Evaluator, Executor

    seen = {}
    monkeypatch.setattr(tfx_evaluator.Executor, "Do",
                        lambda self, inputs, outputs, properties: seen.update(inputs))
    baseline = _baseline(served_version)
    Executor().Do({"examples": [], "model": [], "baseline_model": [baseline]}, {}, {})
    assert ("baseline_model" in seen) is kept
    if kept:
        assert seen["baseline_model"] == [baseline]
    assert set(seen) >= {"examples", "model"}
    assert Evaluator.EXECUTOR_SPEC.executor_class is Executor
