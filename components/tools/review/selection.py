"""Which labelled images go to review: those whose stored label the model finds least
likely (the highest cross-entropy on the stored label)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Probabilities are clipped here before the logarithm: a model certain of another
# class gives a large, finite cross-entropy rather than infinity.
EPSILON = 1e-7


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``-log p[label]`` per row of ``[n, classes]`` probabilities and ``[n]`` class ids."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
        raise ValueError(f"probabilities {probabilities.shape} and labels {labels.shape} "
                         "do not match")
    if labels.size and (labels.min() < 0 or labels.max() >= probabilities.shape[1]):
        raise ValueError(f"labels must be class ids 0-{probabilities.shape[1] - 1}")
    chosen = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(chosen, EPSILON, 1.0))


def review_count(total: int, fraction: float) -> int:
    """How many of ``total`` images a review of ``fraction`` (0-1] takes: at least one
    when there is any."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return min(total, max(1, math.ceil(total * fraction))) if total else 0


def select(losses: Sequence[float], keys: Sequence[str], fraction: float) -> list[int]:
    """Indices of the ``fraction`` of images with the highest loss, highest first.

    Ties are broken by ``keys`` (the image ids), so one run gives one selection.
    """
    if len(losses) != len(keys):
        raise ValueError("one key per loss")
    order = sorted(range(len(losses)), key=lambda i: (-float(losses[i]), keys[i]))
    return order[:review_count(len(losses), fraction)]
