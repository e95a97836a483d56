"""The report's tables and operating points, from hand-made TFMA-shaped results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.names import CLASS_NAMES
from components.tools.report import tables
from components.tools.report.render import FIGURES, JSON, MARKDOWN, write_report
from components.tools.report.results import EvaluationResults, RocCurve, SliceResult

# [true, predicted] in CLASS_NAMES order: clear, crystals, other, precipitate.
GOOD = np.array([[8, 1, 0, 1], [0, 9, 0, 1], [1, 0, 3, 1], [0, 0, 0, 20]], dtype=float)
POOR = np.array([[5, 0, 0, 5], [2, 6, 0, 2], [0, 0, 0, 5], [0, 0, 0, 10]], dtype=float)


def _slice(name: str, confusion: np.ndarray, roc: dict | None = None) -> SliceResult:
    correct = np.trace(confusion) / confusion.sum()
    return SliceResult(name, float(confusion.sum()), float(correct), confusion,
                       roc=roc or {})


def _results() -> EvaluationResults:
    roc = RocCurve(
        thresholds=np.array([0.9, 0.7, 0.5, 0.3, 0.1]),
        true_positive_rate=np.array([0.50, 0.80, 0.95, 0.99, 1.0]),
        false_positive_rate=np.array([0.00, 0.02, 0.10, 0.18, 0.60]),
    )
    return EvaluationResults(
        path="eval",
        overall=_slice("overall", GOOD + POOR, {"crystals": roc}),
        institutions={"AAA": _slice("AAA", GOOD), "BBB": _slice("BBB", POOR)},
        blessed=True,
        failures=[],
    )


def test_table4_is_the_confusion_normalised_by_true_label_in_the_papers_order():
    result = tables.table4(_results())
    total = GOOD + POOR
    crystals, precipitate = CLASS_NAMES.index("crystals"), CLASS_NAMES.index("precipitate")
    # Row "crystals", column "precipitate" of the paper's layout.
    assert result[0, 1] == pytest.approx(total[crystals, precipitate] / total[crystals].sum())
    assert np.allclose(result.sum(axis=1), 1.0)
    assert tables.PAPER_ORDER == ("crystals", "precipitate", "clear", "other")


def test_table5_is_the_spread_of_each_institutions_normalised_matrix():
    result = tables.table5(_results())
    clear, other = CLASS_NAMES.index("clear"), CLASS_NAMES.index("other")
    good = GOOD[other, other] / GOOD[other].sum()
    poor = POOR[other, other] / POOR[other].sum()
    # Row "other" (paper order 3), column "other": population std of two values.
    assert result[3, 3] == pytest.approx(abs(good - poor) / 2)
    assert result[2, 2] == pytest.approx(
        abs(GOOD[clear, clear] / GOOD[clear].sum() - POOR[clear, clear] / POOR[clear].sum()) / 2
    )


def test_table5_ignores_institutions_without_a_class_and_needs_two():
    lacking = POOR.copy()
    lacking[CLASS_NAMES.index("other")] = 0
    results = _results()
    results.institutions["BBB"] = _slice("BBB", lacking)
    spread = tables.table5(results)
    assert np.isnan(spread[3]).all(), "only one institution has 'other' images"
    assert not np.isnan(spread[0]).any()


def test_crystal_operating_points_follow_the_papers_definitions():
    roc = _results().overall.roc["crystals"]
    at_fpr = tables.recall_at_fpr(roc, 0.19)
    assert at_fpr == {"recall": 0.99, "false_positive_rate": 0.18, "threshold": 0.3}
    at_recall = tables.fpr_at_recall(roc, 0.94)
    assert at_recall == {"recall": 0.95, "false_positive_rate": 0.10, "threshold": 0.5}
    assert tables.fpr_at_recall(roc, 1.01)["false_positive_rate"] is None


def test_report_files_use_class_names_and_match_the_tables(tmp_path):
    results = _results()
    summary = write_report(results, tmp_path, {"pushed_to": "/srv/models/marco/7"})
    saved = json.loads((tmp_path / JSON).read_text())
    assert saved == json.loads(json.dumps(summary))
    table4 = tables.table4(results)
    for i, true in enumerate(tables.PAPER_ORDER):
        for j, predicted in enumerate(tables.PAPER_ORDER):
            assert saved["table4_confusion_by_true_label"][true][predicted] == pytest.approx(
                table4[i, j], abs=1e-6)
    assert saved["institutions"]["BBB"]["accuracy"] == pytest.approx(
        np.trace(POOR) / POOR.sum())
    assert saved["institution_accuracy_spread"]["std"] == pytest.approx(
        abs(np.trace(GOOD) / GOOD.sum() - np.trace(POOR) / POOR.sum()) / 2)
    text = (tmp_path / MARKDOWN).read_text()
    for name in CLASS_NAMES:
        assert f"| {name} |" in text
    assert "/srv/models/marco/7" in text and "| BBB |" in text
    for figure in FIGURES.values():
        assert (tmp_path / figure).stat().st_size > 1000


def _constant_model_results() -> EvaluationResults:
    """A model that answered "other" for every eval image, with the per-class precision
    and recall TFMA's binarized top-1 metrics give such a model (recall 1.0 for every
    class, precision equal to the class's share), which its confusion counts contradict."""
    other = CLASS_NAMES.index("other")
    confusion = np.zeros((4, 4))
    confusion[:, other] = [3, 2, 1, 4]
    shares = confusion.sum(axis=1) / confusion.sum()
    overall = _slice("overall", confusion)
    overall.precision = {name: float(shares[i]) for i, name in enumerate(CLASS_NAMES)}
    overall.recall = dict.fromkeys(CLASS_NAMES, 1.0)
    return EvaluationResults("eval", overall, {"AAA": _slice("AAA", confusion)}, True, [])


def _check_per_class_follows_confusion(saved: dict) -> None:
    counts = saved["confusion_counts"]
    for name in CLASS_NAMES:
        right = counts[name][name]
        given = sum(counts[true][name] for true in CLASS_NAMES)
        actual = sum(counts[name].values())
        facts = saved["per_class"][name]
        assert facts["precision"] == (pytest.approx(right / given) if given else None), name
        assert facts["recall"] == (pytest.approx(right / actual) if actual else None), name


def test_a_constant_models_precision_and_recall_agree_with_its_confusion_counts(tmp_path):
    summary = write_report(_constant_model_results(), tmp_path)
    saved = json.loads((tmp_path / JSON).read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["per_class"]["other"]["recall"] == 1.0
    assert saved["per_class"]["other"]["precision"] == pytest.approx(0.1)
    for name in ("clear", "crystals", "precipitate"):
        # Never predicted: no precision to speak of, and none of its images found.
        assert saved["per_class"][name]["precision"] is None, name
        assert saved["per_class"][name]["recall"] == 0.0, name
    _check_per_class_follows_confusion(saved)
    text = (tmp_path / MARKDOWN).read_text()
    assert "| clear | n/a | 0.0% |" in text and "| other | 10.0% | 100.0% |" in text


def test_per_class_precision_and_recall_follow_the_confusion_counts(tmp_path):
    results = _results()
    results.overall.precision = dict.fromkeys(CLASS_NAMES, 0.5)  # never shown
    saved = write_report(results, tmp_path)
    _check_per_class_follows_confusion(json.loads(json.dumps(saved)))
    assert tables.precision_recall(np.zeros((4, 4)))["clear"] == {
        "precision": None, "recall": None}


@pytest.mark.slow
def test_a_constant_models_report_through_tfma(tmp_path):
    """TFMA on the stored predictions of a model that says "other" to every image (the
    project's EvalConfig, as tests/test_evaluation.py runs it), then the report."""
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    from components.evaluation import eval_config
    from components.tools.report.results import load_results
    from tests.test_evaluation import _example, _predictions_only

    other = CLASS_NAMES.index("other")
    labels = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]
    path = tmp_path / "examples.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, label in enumerate(labels):
            writer.write(_example(label, other, "AAA" if i % 2 else "BBB", top=0.4))
    tfma.run_model_analysis(
        eval_shared_model=None, eval_config=_predictions_only(eval_config(0.0)),
        data_location=str(path), output_path=str(tmp_path / "evaluation"),
    )
    results = load_results(tmp_path / "evaluation")
    write_report(results, tmp_path / "report")
    saved = json.loads((tmp_path / "report" / JSON).read_text())
    assert saved["confusion_counts"]["precipitate"]["other"] == 4
    assert saved["per_class"]["other"] == {
        "precision": pytest.approx(0.1), "recall": 1.0, "roc_auc": pytest.approx(0.5)}
    for name in ("clear", "crystals", "precipitate"):
        assert saved["per_class"][name]["recall"] == 0.0, name
        assert saved["per_class"][name]["precision"] is None, name
    _check_per_class_follows_confusion(saved)
    for code, institution in results.institutions.items():
        assert institution.recall.get("clear") in (0.0, None), code
