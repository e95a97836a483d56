"""A run's ingested examples and pushed model, as the review reads them.

The examples are ImageExampleGen's output (every split), read as written: gzipped
TFRecords of tf.Examples under ``Split-<split>/``. An example's stored label is the
one Transform gives it: the class of an expert's override when the example carries
one (:data:`components.names.OVERRIDE_CLASS_KEY`), otherwise the catalogue's class
of its native label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from apache_beam.io.filesystems import FileSystems

from components import filesystem
from components.catalogue import Catalogue
from components.ingestion import tfexample
from components.ingestion.beam_stages import COUNTS_FILE, EXAMPLE_FILE_PREFIX
from components.names import (
    CLASS_IDS,
    IMAGE_ID_KEY,
    IMAGE_KEY,
    INSTITUTION_KEY,
    LABEL_SOURCE_KEY,
    NATIVE_LABEL_KEY,
    OVERRIDE_CLASS_KEY,
    SOURCE_PATH_KEY,
)
from components.records import FROM_CATALOGUE


class ReviewInputError(ValueError):
    """The run folder or its examples cannot be reviewed; the message says why."""


@dataclasses.dataclass(frozen=True)
class LabelledImage:
    """One ingested example, without its image bytes."""

    institution: str
    image_id: str
    native_label: str
    label: int
    label_source: str
    split: str
    source_path: str
    file: str
    index: int


def _text(features: dict, key: str) -> str:
    values = features.get(key) or [b""]
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def find_examples(run_dir: str | Path) -> str:
    """The newest ingested Examples of a ``marco run`` folder (ImageExampleGen's, the
    ones holding ingestion counts; Transform's output is also of type Examples)."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.local import METADATA_FILE, metadata_config

    run_dir = Path(run_dir)
    if not (run_dir / METADATA_FILE).is_file():
        raise ReviewInputError(f"{run_dir}: no {METADATA_FILE}; is this the --out folder of "
                               "`marco run`?")
    store = metadata_store.MetadataStore(metadata_config(run_dir))
    live = [a for a in store.get_artifacts_by_type("Examples")
            if a.state == metadata_store_pb2.Artifact.LIVE
            and filesystem.exists(filesystem.join(a.uri, COUNTS_FILE))]
    if not live:
        raise ReviewInputError(f"{run_dir}: no ingested examples; has `marco run` ingested "
                               "data in this folder?")
    return max(live, key=lambda a: (a.create_time_since_epoch, a.id)).uri


def example_files(examples_uri: str) -> list[tuple[str, str]]:
    """(split, file) of every example file of an Examples folder, sorted."""
    pattern = filesystem.join(examples_uri, f"Split-*/{EXAMPLE_FILE_PREFIX}-*.gz")
    found = []
    for path in sorted(filesystem.glob(pattern)):
        split = filesystem.name(filesystem.parent(path))[len("Split-"):]
        found.append((split, path))
    if not found:
        raise ReviewInputError(f"{examples_uri}: no example files (Split-*/"
                               f"{EXAMPLE_FILE_PREFIX}-*.gz)")
    return found


def _records(path: str) -> Iterator[bytes]:
    # Beam's file systems decompress a .gz file as they read it.
    with FileSystems.open(path) as handle:
        yield from tfexample.read_tfrecords(handle)


def stored_label(features: dict, catalogue: Catalogue) -> tuple[int, str] | None:
    """(class id, label source) of one parsed example; None when its institution or
    native label is not in ``catalogue``."""
    override = _text(features, OVERRIDE_CLASS_KEY)
    source = _text(features, LABEL_SOURCE_KEY) or FROM_CATALOGUE
    if override in CLASS_IDS:
        return CLASS_IDS[override], source
    class_id = catalogue.class_of(_text(features, INSTITUTION_KEY),
                                  _text(features, NATIVE_LABEL_KEY))
    return None if class_id is None else (class_id, source)


def score_examples(
    examples_uri: str,
    catalogue: Catalogue,
    probabilities: Callable[[Sequence[bytes]], list],
    batch_size: int = 32,
) -> tuple[list[LabelledImage], np.ndarray, dict[str, int]]:
    """Every labelled example of every split and the model's probabilities for it.

    ``probabilities`` maps a batch of image bytes to one array (or an error object)
    per image, as :meth:`components.tools.scoring.model.ProbabilitiesScorer.score` does.
    Returns the images, ``[n, classes]`` probabilities and counts of what was left out
    (``unlabelled``: not in the catalogue; ``unscored``: the model failed on it).
    """
    images: list[LabelledImage] = []
    rows: list[np.ndarray] = []
    skipped = {"unlabelled": 0, "unscored": 0}
    batch: list[tuple[LabelledImage, bytes]] = []

    def flush() -> None:
        outcomes = probabilities([data for _, data in batch])
        for (image, _), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, np.ndarray):
                images.append(image)
                rows.append(outcome.astype(np.float64))
            else:
                skipped["unscored"] += 1
        batch.clear()

    for split, path in example_files(examples_uri):
        for index, record in enumerate(_records(path)):
            features = tfexample.decode_example(record)
            label = stored_label(features, catalogue)
            if label is None:
                skipped["unlabelled"] += 1
                continue
            image = LabelledImage(
                institution=_text(features, INSTITUTION_KEY),
                image_id=_text(features, IMAGE_ID_KEY),
                native_label=_text(features, NATIVE_LABEL_KEY),
                label=label[0], label_source=label[1], split=split,
                source_path=_text(features, SOURCE_PATH_KEY), file=path, index=index,
            )
            batch.append((image, features[IMAGE_KEY][0]))
            if len(batch) >= batch_size:
                flush()
    if batch:
        flush()
    table = np.stack(rows) if rows else np.zeros((0, len(CLASS_IDS)))
    return images, table, skipped


def image_bytes(images: Sequence[LabelledImage]) -> list[bytes]:
    """The stored image bytes of ``images``, read again from their example files."""
    wanted: dict[str, dict[int, int]] = {}
    for position, image in enumerate(images):
        wanted.setdefault(image.file, {})[image.index] = position
    found: list[bytes | None] = [None] * len(images)
    for path, indices in wanted.items():
        for index, record in enumerate(_records(path)):
            if index in indices:
                found[indices[index]] = tfexample.decode_example(record)[IMAGE_KEY][0]
    missing = [images[i].image_id for i, data in enumerate(found) if data is None]
    if missing:
        raise ReviewInputError(f"example files changed while reading them; missing {missing}")
    return [data for data in found if data is not None]
