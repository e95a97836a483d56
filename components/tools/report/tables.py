"""The paper's tables and operating points, computed from TFMA's confusion matrices
and ROC points (never from a second evaluation of the model)."""

from __future__ import annotations

import numpy as np

from components.names import CLASS_NAMES
from components.tools.report.results import EvaluationResults, RocCurve

# Tables 4 and 5 list classes in this order in the paper.
PAPER_ORDER = ("crystals", "precipitate", "clear", "other")

# The paper's Table 4 (fractions of each true class, rows and columns in PAPER_ORDER)
# and Table 5 (standard deviation across the five sources), for comparison.
PAPER_TABLE4 = np.array([
    [0.910, 0.058, 0.017, 0.015],
    [0.008, 0.961, 0.023, 0.007],
    [0.002, 0.018, 0.979, 0.002],
    [0.048, 0.197, 0.059, 0.696],
])
PAPER_TABLE5 = np.array([
    [0.05, 0.04, 0.01, 0.01],
    [0.02, 0.04, 0.01, 0.02],
    [0.01, 0.03, 0.05, 0.01],
    [0.07, 0.15, 0.06, 0.21],
])

# The crystal operating points the paper quotes (Fig 3): recall at under 19% false
# positives, and false positives at 94% recall.
FPR_BUDGET = 0.19
RECALL_TARGET = 0.94

_ORDER = [CLASS_NAMES.index(name) for name in PAPER_ORDER]


def reorder(matrix: np.ndarray) -> np.ndarray:
    """A [true, predicted] matrix in CLASS_NAMES order, rearranged into PAPER_ORDER."""
    return np.asarray(matrix)[np.ix_(_ORDER, _ORDER)]


def normalise_rows(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its total: the fraction of a true class given each label.

    Rows of a class with no examples are NaN (there is nothing to normalise).
    """
    confusion = np.asarray(confusion, dtype=float)
    totals = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, confusion / np.where(totals > 0, totals, 1), np.nan)


def precision_recall(confusion: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Per class, precision and recall of the top-class decisions in ``confusion``.

    ``confusion`` is [true, predicted] in CLASS_NAMES order, each example counted once
    under the class that scored highest: the decisions of Table 4. Precision is the
    share of the images given a class that truly are of it (None when the model never
    gave it); recall the share of a class's images given it (None when it has none).
    """
    confusion = np.asarray(confusion, dtype=float)
    result = {}
    for index, name in enumerate(CLASS_NAMES):
        right = confusion[index, index]
        predicted = confusion[:, index].sum()
        actual = confusion[index, :].sum()
        result[name] = {
            "precision": float(right / predicted) if predicted > 0 else None,
            "recall": float(right / actual) if actual > 0 else None,
        }
    return result


def table4(results: EvaluationResults) -> np.ndarray:
    """Table 4: the overall confusion matrix normalised by true label (PAPER_ORDER)."""
    return reorder(normalise_rows(results.overall.confusion))


def table5(results: EvaluationResults) -> np.ndarray:
    """Table 5: per cell, the standard deviation across institutions of Table 4.

    Each institution's confusion matrix is normalised by its own true labels; an
    institution without examples of a true class does not count in that row. This is
    the population standard deviation (ddof 0); a row seen in fewer than two
    institutions is NaN.
    """
    per_source = [normalise_rows(s.confusion) for s in results.institutions.values()]
    if not per_source:
        return np.full((len(CLASS_NAMES),) * 2, np.nan)
    stacked = np.stack(per_source)
    counts = np.sum(~np.isnan(stacked), axis=0)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanstd(stacked, axis=0)
    return reorder(np.where(counts >= 2, spread, np.nan))


def recall_at_fpr(roc: RocCurve, budget: float = FPR_BUDGET) -> dict:
    """The highest recall whose false-positive rate stays under ``budget``."""
    inside = roc.false_positive_rate < budget
    if not inside.any():
        return {"recall": None, "false_positive_rate": None, "threshold": None}
    best = np.flatnonzero(inside)[np.argmax(roc.true_positive_rate[inside])]
    return {
        "recall": float(roc.true_positive_rate[best]),
        "false_positive_rate": float(roc.false_positive_rate[best]),
        "threshold": float(roc.thresholds[best]),
    }


def fpr_at_recall(roc: RocCurve, target: float = RECALL_TARGET) -> dict:
    """The lowest false-positive rate at which recall reaches ``target``."""
    reached = roc.true_positive_rate >= target
    if not reached.any():
        return {"recall": None, "false_positive_rate": None, "threshold": None}
    best = np.flatnonzero(reached)[np.argmin(roc.false_positive_rate[reached])]
    return {
        "recall": float(roc.true_positive_rate[best]),
        "false_positive_rate": float(roc.false_positive_rate[best]),
        "threshold": float(roc.thresholds[best]),
    }


def institution_accuracy(results: EvaluationResults) -> dict[str, float]:
    return {code: s.accuracy for code, s in results.institutions.items()}


def accuracy_spread(results: EvaluationResults) -> dict:
    """Mean, standard deviation, lowest and highest accuracy over institutions."""
    values = np.array([v for v in institution_accuracy(results).values() if np.isfinite(v)])
    if not len(values):
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max())}
