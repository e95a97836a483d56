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
