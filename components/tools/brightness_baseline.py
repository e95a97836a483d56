"""How far brightness alone gets: the floor a drop classifier has to clear.

Every image is reduced to two numbers, the mean and the standard deviation of its grey
levels, and three simple classifiers are trained on them (Gaussian naive Bayes,
logistic regression, 15 nearest neighbours). The best of their held-out accuracies is
the brightness-only baseline: a CNN that does no better has learned nothing that
overall exposure does not already tell.

:func:`measure` does it on a data folder with the pipeline's own split (the same
training and eval images as ImageExampleGen's), which is what ``marco demo`` prints
beside its model's accuracy; ``benchmarks/brightness_baseline.py`` uses
:func:`brightness_features` and :func:`score_classifiers` on fresh synthetic sets.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from components.catalogue import Catalogue
from components.names import CLASS_NAMES, EVAL_SPLIT

FEATURES = ("mean", "std")


def brightness_features(images: Sequence[Path | str | bytes]) -> np.ndarray:
    """(n, 2) array: mean and standard deviation of each image's grey levels.

    ``images`` are paths (local or on an object store) or encoded image bytes.
    """
    from PIL import Image

    from components import filesystem

    feats = np.empty((len(images), 2), dtype=np.float64)
    for i, image in enumerate(images):
        data = image if isinstance(image, bytes) else filesystem.read_bytes(str(image))
        with Image.open(io.BytesIO(data)) as img:
            grey = np.asarray(img.convert("L"), dtype=np.float32)
        feats[i] = grey.mean(), grey.std()
    return feats


def score_classifiers(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                      y_test: np.ndarray) -> dict:
    """Held-out accuracy of the three brightness-only classifiers, and the majority rate.

    Labels are class ids (0 clear ... 3 precipitate).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    models = {
        "gaussian_nb": GaussianNB(),
        "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "knn_15": make_pipeline(
            StandardScaler(), KNeighborsClassifier(n_neighbors=min(15, len(y_train)))
        ),
    }
    scores = {}
    for name, model in models.items():
        model.fit(x_train, y_train)
        scores[name] = float((model.predict(x_test) == y_test).mean())
    counts = np.bincount(y_test, minlength=len(CLASS_NAMES))
    return {
        "accuracy": scores,
        "best_accuracy": max(scores.values()),
        "majority_class": CLASS_NAMES[int(counts.argmax())],
        "majority_rate": float(counts.max() / counts.sum()),
        "train_images": len(y_train),
        "test_images": len(y_test),
    }


@dataclasses.dataclass(frozen=True)
class BrightnessBaseline:
    """The baseline measured on one data set and split.

    Attributes:
        accuracy: the best classifier's accuracy on the eval images.
        accuracies: each classifier's accuracy on the eval images.
        train_images, eval_images: images the classifiers were trained and scored on.
        majority_class, majority_rate: the commonest eval class and its share.
        cpu_seconds: CPU time of the measurement (reading, decoding, fitting).
        skipped: records left out: unreadable records or images, labels the
            catalogue does not map, repeated image ids (ingestion quarantines those).
    """

    accuracy: float
    accuracies: dict[str, float]
    train_images: int
    eval_images: int
    majority_class: str
    majority_rate: float
    cpu_seconds: float
    skipped: int = 0


def labelled_images(data_dir: Path | str, catalogue: Catalogue, eval_percent: int
                    ) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """(training images, eval images, records skipped) of a data folder.

    Each image is (path, class id), split by ImageExampleGen's hash of the image id,
    so the two lists are the pipeline's own splits of the same folder.
    """
    from components.ingestion.beam_stages import split_for
    from components.readers import Record, read_source

    train: list[tuple[str, int]] = []
    evaluation: list[tuple[str, int]] = []
    seen: set[str] = set()
    skipped = 0
    for source in catalogue:
        for record in read_source(source, data_dir):
            label = source.class_of(record.native_label) if isinstance(record, Record) else None
            if label is None or record.image_id in seen:
                skipped += 1
                continue
            seen.add(record.image_id)
            split = split_for(record.image_id, eval_percent)
            (evaluation if split == EVAL_SPLIT else train).append((record.path, label))
    return train, evaluation, skipped


def _readable(images: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Features and labels of the images that decode; the number that do not."""
    rows, labels, failed = [], [], 0
    for path, label in images:
        try:
            rows.append(brightness_features([path])[0])
        except (OSError, ValueError, SyntaxError):  # what PIL raises on a bad file
            failed += 1
            continue
        labels.append(label)
    return np.array(rows).reshape(-1, 2), np.array(labels, dtype=np.int64), failed


def measure(data_dir: Path | str, catalogue: Catalogue | None = None,
            eval_percent: int = 10) -> BrightnessBaseline:
    """The brightness-only baseline of a data folder, on the pipeline's own split.

    Raises:
        ValueError: when either split has no readable image.
    """
    if catalogue is None:
        from components.catalogue import load_catalogue

        catalogue = load_catalogue()
    started = time.process_time()
    train, evaluation, skipped = labelled_images(data_dir, catalogue, eval_percent)
    x_train, y_train, train_failed = _readable(train)
    x_eval, y_eval, eval_failed = _readable(evaluation)
    if not len(y_train) or not len(y_eval):
        raise ValueError(f"no readable {'training' if not len(y_train) else 'eval'} images "
                         f"in {data_dir}")
    scores = score_classifiers(x_train, y_train, x_eval, y_eval)
    return BrightnessBaseline(
        accuracy=scores["best_accuracy"],
        accuracies=scores["accuracy"],
        train_images=len(y_train),
        eval_images=len(y_eval),
        majority_class=scores["majority_class"],
        majority_rate=scores["majority_rate"],
        cpu_seconds=time.process_time() - started,
        skipped=skipped + train_failed + eval_failed,
    )
