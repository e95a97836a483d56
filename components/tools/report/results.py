"""Reads a TFMA evaluation (the Evaluator's ModelEvaluation artifact) into plain arrays.

The candidate model's values are read for every slice. When the Evaluator compared
against a baseline (the served model, or the model the run started from), TFMA also
wrote the baseline's metrics and the differences; the baseline's overall slice is
read as well (:attr:`EvaluationResults.baseline`), for the side-by-side comparison.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from components.names import CLASS_NAMES, INSTITUTION_KEY, NUM_CLASSES

OVERALL = "overall"
_CANDIDATE_NAMES = ("", "candidate")
CANDIDATE = "candidate"
BASELINE = "baseline"


class EvaluationError(ValueError):
    """The evaluation folder lacks something the report needs; the message says what."""


@dataclasses.dataclass
class RocCurve:
    """One class against the rest, at TFMA's thresholds (highest threshold first)."""

    thresholds: np.ndarray
    true_positive_rate: np.ndarray
    false_positive_rate: np.ndarray


@dataclasses.dataclass
class SliceResult:
    """Metrics of one slice: all examples, or one institution's."""

    name: str
    example_count: float
    accuracy: float
    confusion: np.ndarray  # [true, predicted] counts, in CLASS_NAMES order
    precision: dict[str, float] = dataclasses.field(default_factory=dict)
    recall: dict[str, float] = dataclasses.field(default_factory=dict)
    auc: dict[str, float] = dataclasses.field(default_factory=dict)
    roc: dict[str, RocCurve] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EvaluationResults:
    """Every slice of one evaluation, and whether the model passed its thresholds."""

    path: str
    overall: SliceResult
    institutions: dict[str, SliceResult]
    blessed: bool | None
    failures: list[str]
    # The baseline model's overall slice, when the Evaluator compared with one.
    baseline: SliceResult | None = None


def _slice_name(slice_key) -> str | None:
    """``overall`` for all examples, the institution code for its slice, else None."""
    keys = list(slice_key.single_slice_keys)
    if not keys:
        return OVERALL
    if len(keys) == 1 and keys[0].column == INSTITUTION_KEY:
        value = keys[0]
        kind = value.WhichOneof("kind")
        raw = getattr(value, kind)
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    return None


def _class_id(key) -> int | None:
    return key.sub_key.class_id.value if key.sub_key.HasField("class_id") else None


def _candidate(key) -> bool:
    return key.model_name in _CANDIDATE_NAMES and not getattr(key, "is_diff", False)


def _of_model(key, model: str) -> bool:
    if model == CANDIDATE:
        return _candidate(key)
    return key.model_name == model and not getattr(key, "is_diff", False)


def _metric_value(value) -> float | None:
    kind = value.WhichOneof("type")
    if kind == "double_value":
        return float(value.double_value.value)
    return None


def load_results(evaluation_dir: str | Path, model: str = CANDIDATE) -> EvaluationResults:
    """Reads metrics, plots and validation from an Evaluator output folder.

    ``model`` is whose values to read: the candidate's (and then also the baseline's
    overall slice, when there is one), or ``baseline``.
    """
    import tensorflow_model_analysis as tfma

    path = str(evaluation_dir)
    try:
        metrics = list(tfma.load_metrics(path))
        plots = list(tfma.load_plots(path))
    except Exception as exc:  # TFMA raises NotFoundError, ValueError, ... on bad folders
        raise EvaluationError(f"{path}: cannot read TFMA metrics and plots: {exc}") from exc
    if not metrics:
        raise EvaluationError(f"{path}: no TFMA metrics found")

    slices: dict[str, SliceResult] = {}

    def slice_for(name: str) -> SliceResult:
        if name not in slices:
            slices[name] = SliceResult(
                name, 0.0, float("nan"), np.zeros((NUM_CLASSES, NUM_CLASSES))
            )
        return slices[name]

    def candidate_entries(records, field: str):
        """(slice result, key, value) of ``model`` in the slices we report."""
        for record in records:
            name = _slice_name(record.slice_key)
            if name is None:
                continue
            result = slice_for(name)
            for entry in getattr(record, field):
                if _of_model(entry.key, model):
                    yield result, entry.key, entry.value

    for result, key, metric in candidate_entries(metrics, "metric_keys_and_values"):
        value = _metric_value(metric)
        if value is None:
            continue
        class_id = _class_id(key)
        if class_id is None:
            if key.name == "example_count":
                result.example_count = value
            elif key.name == "sparse_categorical_accuracy":
                result.accuracy = value
            continue
        if key.name == "auc":
            result.auc[CLASS_NAMES[class_id]] = value

    for result, key, data in candidate_entries(plots, "plot_keys_and_values"):
        if data.HasField("multi_class_confusion_matrix_at_thresholds"):
            matrices = data.multi_class_confusion_matrix_at_thresholds.matrices
            # The default threshold 0 means: the class with the highest score.
            matrix = next((m for m in matrices if m.threshold == 0.0), matrices[0])
            for cell in matrix.entries:
                if 0 <= cell.actual_class_id < NUM_CLASSES and \
                        0 <= cell.predicted_class_id < NUM_CLASSES:
                    result.confusion[cell.actual_class_id, cell.predicted_class_id] += (
                        cell.num_weighted_examples
                    )
        elif data.HasField("confusion_matrix_at_thresholds"):
            class_id = _class_id(key)
            if class_id is None:
                continue
            points = sorted(
                data.confusion_matrix_at_thresholds.matrices,
                key=lambda m: m.threshold, reverse=True,
            )
            tp = np.array([m.true_positives for m in points])
            fn = np.array([m.false_negatives for m in points])
            fp = np.array([m.false_positives for m in points])
            tn = np.array([m.true_negatives for m in points])
            with np.errstate(invalid="ignore", divide="ignore"):
                tpr = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
                fpr = np.where(fp + tn > 0, fp / (fp + tn), 0.0)
            result.roc[CLASS_NAMES[class_id]] = RocCurve(
                np.array([m.threshold for m in points]), tpr, fpr
            )

    # Precision and recall as the confusion matrix counts them (the class that scores
    # highest), not TFMA's binarized top-k metrics, which disagree with it for a
    # model that gives every image the same class.
    from components.tools.report.tables import precision_recall

    for result in slices.values():
        decisions = precision_recall(result.confusion)
        result.precision = {name: facts["precision"] for name, facts in decisions.items()
                            if facts["precision"] is not None}
        result.recall = {name: facts["recall"] for name, facts in decisions.items()
                         if facts["recall"] is not None}

    if OVERALL not in slices:
        raise EvaluationError(f"{path}: TFMA wrote no overall slice")
    overall = slices.pop(OVERALL)
    if not overall.confusion.any():
        raise EvaluationError(
            f"{path}: no MultiClassConfusionMatrixPlot in the TFMA plots; the EvalConfig "
            "must include it (see components/evaluation.py)"
        )
    blessed, failures = _validation(path)
    baseline = None
    if model == CANDIDATE and any(
        _of_model(entry.key, BASELINE)
        for record in metrics for entry in record.metric_keys_and_values
    ):
        baseline = load_results(path, BASELINE).overall
    return EvaluationResults(path, overall, dict(sorted(slices.items())), blessed, failures,
                             baseline)


def _validation(path: str) -> tuple[bool | None, list[str]]:
    """Whether TFMA's thresholds passed, and a sentence per failed threshold."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    if not tf.io.gfile.glob(f"{path.rstrip('/')}/validations*"):
        return None, []  # an evaluation without thresholds writes no validation file
    try:
        validation = tfma.load_validation_result(path)
    except Exception as exc:  # a corrupt file must not read as "no thresholds"
        raise EvaluationError(f"{path}: cannot read TFMA's validation result: {exc}") from exc
    failures = []
    for failure in validation.metric_validations_per_slice:
        where = _slice_name(failure.slice_key) or "a slice"
        for item in failure.failures:
            value = item.metric_value.double_value.value
            detail = item.message or f"= {value:.4f} fails {item.metric_threshold}".replace(
                "\n", " ")
            failures.append(f"{where}: {item.metric_key.name} {detail}".strip())
    return bool(validation.validation_ok), failures
