"""The released MARCO model run as it is, with its probabilities in MARCO's class order.

:class:`ReleasedModel` loads the released SavedModel into one TensorFlow session, as
TF Serving does, and returns per image the four probabilities in
:data:`components.names.CLASS_NAMES` order, read by class name from the graph's
``classes`` and ``scores`` outputs (which come sorted by score).

The released graph decodes JPEG only. Other images (PNG, BMP, GIF, and TIFF once
scoring has turned it into PNG) are prepared here by
:func:`components.model.preprocessing.eval_preprocess`, which repeats the graph's own
preprocessing step for step, and fed to the graph where its preprocessing ends
(:data:`~components.tools.released.graph.NETWORK_INPUT`). Nothing is re-encoded, so no
pixel changes: the network sees what the graph would have given it had it been able to
decode the file. 16-bit PNGs keep their precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from components.model import preprocessing
from components.names import CLASS_IDS, NUM_CLASSES
from components.tools.released.graph import SERVE_TAG, ReleasedGraph, read_released

JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(image: bytes) -> bool:
    """Whether ``image`` starts as a JPEG file does (the only format the graph decodes)."""
    return image[:3] == JPEG_MAGIC


class ReleasedModel:
    """One released-format SavedModel in a session; safe to call from many threads.

    Args:
        model_dir: the SavedModel folder.

    Raises:
        components.tools.released.graph.NotReleasedModel: for another kind of model.
        OSError: when TensorFlow cannot load it.
    """

    def __init__(self, model_dir: str) -> None:
        from tensorflow.python.util import deprecation

        from components.tools.serving import describe_error

        self.graph_info: ReleasedGraph = read_released(model_dir)
        graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=graph)
        try:
            with graph.as_default(), deprecation.silence():
                tf.compat.v1.saved_model.loader.load(self._session, [SERVE_TAG], str(model_dir))
        except (OSError, RuntimeError, tf.errors.OpError) as exc:
            self._session.close()
            raise OSError(f"cannot load a SavedModel from {model_dir}: "
                          f"{describe_error(exc)}") from exc
        graph.finalize()
        size = self.graph_info.input_size
        self._prepare = tf.function(
            lambda images: tf.map_fn(
                lambda b: preprocessing.eval_preprocess(b, size), images,
                fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
            ),
            input_signature=[tf.TensorSpec([None], tf.string)],
        )

    @property
    def input_size(self) -> int:
        return self.graph_info.input_size

    def _by_class(self, classes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        out = np.full((len(classes), NUM_CLASSES), np.nan, np.float32)
        for row, (names, values) in enumerate(zip(classes, scores, strict=True)):
            for name, value in zip(names, values, strict=True):
                key = name.decode("utf-8").lower()
                if key not in CLASS_IDS:
                    raise ValueError(f"{self.graph_info.model_dir}: the model returned the "
                                     f"unknown class {name!r}")
                out[row, CLASS_IDS[key]] = value
        return out

    def run_jpeg(self, images: Sequence[bytes]) -> np.ndarray:
        """Probabilities ``[N, 4]`` of JPEG images through the whole released graph."""
        info = self.graph_info
        classes, scores = self._session.run(
            [info.classes_output, info.scores_output],
            {info.image_input: np.array(list(images), dtype=object)},
        )
        return self._by_class(classes, scores)

    def run_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``[N, 4]`` of images already prepared (``[N, S, S, 3]`` in [-1, 1])."""
        info = self.graph_info
        classes, scores = self._session.run(
            [info.classes_output, info.scores_output],
            {info.network_input: np.asarray(batch, np.float32)},
        )
        return self._by_class(classes, scores)

    def prepare(self, images: Sequence[bytes]) -> np.ndarray:
        """The network's input for encoded images of any format TensorFlow decodes."""
        return self._prepare(tf.constant(list(images), dtype=tf.string)).numpy()

    def probabilities(self, images: Sequence[bytes]) -> np.ndarray:
        """``[len(images), 4]`` probabilities in MARCO's class order.

        JPEGs go through the released graph as they are; other formats are prepared
        here and fed after the graph's preprocessing (module docstring).

        Raises:
            tf.errors.OpError: when an image cannot be decoded.
        """
        images = list(images)
        out = np.empty((len(images), NUM_CLASSES), np.float32)
        jpeg = [i for i, image in enumerate(images) if is_jpeg(image)]
        other = [i for i, image in enumerate(images) if not is_jpeg(image)]
        if jpeg:
            out[jpeg] = self.run_jpeg([images[i] for i in jpeg])
        if other:
            out[other] = self.run_prepared(self.prepare([images[i] for i in other]))
        return out

    def close(self) -> None:
        self._session.close()
