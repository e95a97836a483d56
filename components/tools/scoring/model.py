"""The pushed model for batch scoring: which version to load, and a RunInference handler.

The Pusher writes blessed models in TF Serving's layout, ``<serving dir>/<version>/``
with integer versions; :func:`resolve_model` accepts that folder (and takes the
highest version, as TF Serving does) or any SavedModel folder.

:class:`ProbabilitiesModelHandler` runs the SavedModel's ``probabilities`` signature
(encoded image bytes in, the four class probabilities out in MARCO's fixed order), so
scoring decodes and crops exactly as serving does. A batch holding an image the model
cannot decode fails as a whole in TensorFlow; the handler then finds the culprits and
scores the rest, so one bad file costs one error row, never the batch.

The model the MARCO initiative released (a TF1 SavedModel with ``classes`` and
``scores`` outputs, no ``probabilities`` signature) is scored as it is:
:func:`model_kind` recognises it and :class:`ReleasedScorer` runs it through
:class:`components.tools.released.model.ReleasedModel`, which maps its classes to
MARCO's order by name and prepares the images its graph cannot decode (it reads JPEG
only) without re-encoding them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from components import filesystem
from components.names import (
    BYTES_INPUT,
    NUM_CLASSES,
    PROBABILITIES_OUTPUT,
    PROBABILITIES_SIGNATURE,
)
from components.tools.serving import ServedModel, describe_error

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
# What :func:`model_kind` finds; the summary of a scoring run names it.
PROJECT_MODEL = "MARCO model"
RELEASED_MODEL = "released MARCO model (TF1 SavedModel)"
DEFAULT_BATCH_SIZE = 16
METRICS_NAMESPACE = "marco_score"


class ModelNotFound(ValueError):
    """The given path holds no SavedModel, directly or as a numbered version."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """A SavedModel folder and, when it came from a serving folder, its version."""

    path: str
    version: int | None = None


@dataclasses.dataclass(frozen=True)
class ImageError:
    """Why one image got no probabilities."""

    message: str


def _is_saved_model(path: str) -> bool:
    return any(filesystem.exists(filesystem.join(path, f)) for f in SAVED_MODEL_FILES)


def resolve_model(path: str) -> ModelVersion:
    """The SavedModel to score with: ``path`` itself or its highest numbered version.

    Args:
        path: a serving folder (``<path>/<integer>/saved_model.pb``, the Pusher's and
            TF Serving's layout), one version folder of it, or any SavedModel folder.

    Raises:
        ModelNotFound: naming the path, when neither holds a SavedModel.
    """
    path = filesystem.normalise(str(path))
    if not filesystem.is_remote(path):
        path = os.path.abspath(path)
    if not filesystem.isdir(path):
        raise ModelNotFound(f"--model {path}: no such folder")
    if _is_saved_model(path):
        name = filesystem.name(path)
        return ModelVersion(path, int(name) if name.isdigit() else None)
    versions = sorted(
        (int(filesystem.name(folder)), folder)
        for folder in filesystem.subfolders(path)
        if filesystem.name(folder).isdigit()
    )
    complete = [(v, folder) for v, folder in versions if _is_saved_model(folder)]
    if complete:
        version, folder = complete[-1]
        return ModelVersion(folder, version)
    if versions:
        raise ModelNotFound(
            f"--model {path}: version folders {[v for v, _ in versions]} hold no "
            "saved_model.pb"
        )
    raise ModelNotFound(
        f"--model {path}: not a SavedModel (no saved_model.pb) nor a serving folder "
        "(no numbered version folders)"
    )


def model_kind(model_dir: str) -> str:
    """Which kind of model ``model_dir`` holds: :data:`PROJECT_MODEL` or :data:`RELEASED_MODEL`.

    A model with the ``probabilities`` signature is this project's; one without it is
    accepted when it is the released MARCO serving graph. Reads only the MetaGraph,
    not the weights.

    Raises:
        ModelNotFound: when the ``probabilities`` signature lacks its input or output,
            or the model has neither it nor the released graph.
    """
    from components.tools.released.graph import (
        NotReleasedModel,
        read_saved_model,
        released_graph,
    )

    pb = filesystem.join(model_dir, SAVED_MODEL_FILES[0])
    if not filesystem.exists(pb):
        return PROJECT_MODEL  # a text-format SavedModel: the loader checks it
    saved = read_saved_model(model_dir)
    for meta_graph in saved.meta_graphs:
        signature = meta_graph.signature_def.get(PROBABILITIES_SIGNATURE)
        if signature is None:
            continue
        if BYTES_INPUT in signature.inputs and PROBABILITIES_OUTPUT in signature.outputs:
            return PROJECT_MODEL
        raise ModelNotFound(
            f"{model_dir}: signature {PROBABILITIES_SIGNATURE!r} takes "
            f"{sorted(signature.inputs)} and gives {sorted(signature.outputs)}; scoring "
            f"needs {BYTES_INPUT!r} in and {PROBABILITIES_OUTPUT!r} out"
        )
    try:
        released_graph(saved, model_dir)
    except NotReleasedModel as exc:
        names = sorted({n for g in saved.meta_graphs for n in g.signature_def})
        raise ModelNotFound(
            f"{model_dir}: no {PROBABILITIES_SIGNATURE!r} signature (it has: "
            f"{', '.join(names) or 'none'}), and not the released MARCO model either "
            f"({str(exc).removeprefix(f'{model_dir}: ')}); export the model with "
            "components.trainer.export"
        ) from None
    return RELEASED_MODEL


def check_signature(model_dir: str) -> str:
    """Fails early, naming the model, when it cannot be scored; else :func:`model_kind`."""
    return model_kind(model_dir)


def decode_problem(image: bytes) -> str | None:
    """Why TensorFlow's image decoder refuses ``image``, or None when it accepts it."""
    if not image:
        return "empty file"
    try:
        tf.io.decode_image(image, channels=3, expand_animations=False)
    except tf.errors.OpError as exc:
        return describe_error(exc)
    return None


class ProbabilitiesScorer:
    """The ``probabilities`` signature of one SavedModel, safe to call from many threads."""

    def __init__(self, model_dir: str) -> None:
        self._model = ServedModel(model_dir)
        signature = self._model.signature(PROBABILITIES_SIGNATURE)
        if BYTES_INPUT not in signature.inputs or PROBABILITIES_OUTPUT not in signature.outputs:
            raise ModelNotFound(f"{model_dir}: the {PROBABILITIES_SIGNATURE!r} signature "
                                f"does not map {BYTES_INPUT!r} to {PROBABILITIES_OUTPUT!r}")

    def probabilities(self, images: Sequence[bytes]) -> np.ndarray:
        """``[len(images), 4]`` probabilities; raises tf.errors.OpError on a bad image."""
        outputs = self._model.run(
            PROBABILITIES_SIGNATURE, {BYTES_INPUT: np.array(list(images), dtype=object)}
        )
        return outputs[PROBABILITIES_OUTPUT]

    def score(self, images: Sequence[bytes]) -> list[np.ndarray | ImageError]:
        """Probabilities per image, or an :class:`ImageError` for those that fail.

        The whole batch runs in one call. If it fails, each image is checked with
        TensorFlow's decoder (cheap next to the network), the refused ones get their
        error and the others run again together; should the model still fail, the
        images run one by one.
        """
        if not images:
            return []
        try:
            return list(self.probabilities(images))
        except tf.errors.OpError as batch_error:
            if len(images) == 1:
                return [ImageError(describe_error(batch_error))]
        problems = [decode_problem(image) for image in images]
        good = [i for i, problem in enumerate(problems) if problem is None]
        if len(good) == len(images):
            # The decoder accepts every image, yet the batch fails: isolate each image.
            return [self.score([image])[0] for image in images]
        results: list[np.ndarray | ImageError] = [ImageError(p or "") for p in problems]
        for index, outcome in zip(good, self.score([images[i] for i in good]), strict=True):
            results[index] = outcome
        return results


class ReleasedScorer(ProbabilitiesScorer):
    """:class:`ProbabilitiesScorer` for the released MARCO model (any image format)."""

    def __init__(self, model_dir: str) -> None:
        from components.tools.released.model import ReleasedModel

        self._released = ReleasedModel(model_dir)

    def probabilities(self, images: Sequence[bytes]) -> np.ndarray:
        return self._released.probabilities(images)


def load_scorer(model_dir: str, kind: str | None = None) -> ProbabilitiesScorer:
    """The scorer for the model in ``model_dir`` (its kind found unless given)."""
    kind = kind or model_kind(model_dir)
    return ReleasedScorer(model_dir) if kind == RELEASED_MODEL else ProbabilitiesScorer(model_dir)


class ProbabilitiesModelHandler(ModelHandler[bytes, PredictionResult, ProbabilitiesScorer]):
    """RunInference handler: encoded images in, MARCO class probabilities out.

    Each :class:`PredictionResult` carries the image bytes as ``example`` and, as
    ``inference``, a float32 array of the four probabilities (in
    :data:`components.names.CLASS_NAMES` order) or an :class:`ImageError`. Wrap it in
    ``KeyedModelHandler`` to carry each image's path through.

    Args:
        model_dir: the SavedModel folder (see :func:`resolve_model`).
        batch_size: images per model call. Batches are fixed at this size (but for the
            last of each bundle): the network's throughput on a CPU barely changes
            from 8 upwards, and fixed shapes avoid re-optimising the graph.
        kind: :data:`PROJECT_MODEL` or :data:`RELEASED_MODEL`; None finds it when the
            model loads.
    """

    def __init__(self, model_dir: str, batch_size: int = DEFAULT_BATCH_SIZE,
                 kind: str | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._model_dir = str(model_dir)
        self._batch_size = batch_size
        self._kind = kind

    def load_model(self) -> ProbabilitiesScorer:
        return load_scorer(self._model_dir, self._kind)

    def run_inference(
        self,
        batch: Sequence[bytes],
        model: ProbabilitiesScorer,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        outcomes = model.score(batch)
        return [PredictionResult(image, outcome) for image, outcome in zip(batch, outcomes,
                                                                             strict=True)]

    def get_num_bytes(self, batch: Sequence[bytes]) -> int:
        return sum(len(image) for image in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": self._batch_size, "max_batch_size": self._batch_size}

    def __repr__(self) -> str:
        return f"ProbabilitiesModelHandler({self._model_dir!r}, batch_size={self._batch_size})"


def probabilities_or_error(
    outcome: np.ndarray | ImageError,
) -> tuple[tuple[float, ...] | None, str]:
    """(the four probabilities as floats, "") or (None, error message) for one outcome."""
    if isinstance(outcome, ImageError):
        return None, outcome.message or "the model failed on this image"
    values = np.asarray(outcome, dtype=np.float32).reshape(-1)
    if values.shape != (NUM_CLASSES,) or not np.all(np.isfinite(values)):
        return None, f"the model returned {values.tolist()} instead of {NUM_CLASSES} probabilities"
    return tuple(float(v) for v in values), ""
