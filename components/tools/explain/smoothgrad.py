"""SmoothGrad saliency of a MARCO model: which pixels move a class's score.

SmoothGrad (Smilkov et al., 2017) averages the gradient of a class score with respect
to the input pixels over copies of the image with Gaussian noise added; the average is
much less speckled than one gradient. The MARCO paper used it for its Figure 4
heatmaps.

Here the image is prepared exactly as the served model prepares it
(:func:`components.model.preprocessing.eval_preprocess`: centre square crop, bilinear
resize to the network's side, values in [-1, 1]) outside the gradient computation,
and the gradient is taken of the network's logit for the class (the score before the
softmax, which does not saturate as a probability near 0 or 1 does) with respect to
those prepared pixels. The heatmap is the absolute value of the averaged gradient,
summed over the three colour channels: one non-negative value per pixel of the
network's input.

The noise of sample ``k`` is drawn from a stateless generator seeded with
``(seed, k)``, so a heatmap depends only on the image, the model and the settings:
not on the batch size, on other images explained in the same run or on their order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from components import runtime
from components.model import preprocessing
from components.names import CLASS_NAMES, NUM_CLASSES
from components.tools.explain import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_NOISE,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
)

runtime.skip_autograph_for_tf_keras()

Network = Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class SmoothGradSettings:
    """How a heatmap is computed.

    Attributes:
        samples: noisy copies of the image whose gradients are averaged.
        noise: standard deviation of the Gaussian noise, as a fraction of the prepared
            image's value range (its maximum minus its minimum); SmoothGrad's authors
            found 0.1 to 0.2 best.
        batch_size: noisy copies per network call (memory grows with it).
        seed: seeds the noise; the same seed gives the same heatmap.
    """

    samples: int = DEFAULT_SAMPLES
    noise: float = DEFAULT_NOISE
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.noise <= 1.0 or not np.isfinite(self.noise):
            raise ValueError(f"noise must be between 0 and 1, got {self.noise}")


@dataclasses.dataclass(frozen=True)
class Explanation:
    """One image's heatmap and the model's view of it.

    Attributes:
        saliency: float32 ``[size, size]``, non-negative, over the prepared image.
        image: float32 ``[size, size, 3]`` in [-1, 1]: the prepared image (the
            network's input, without noise).
        probabilities: float32 ``[4]``, the model's probabilities for the image, in
            :data:`components.names.CLASS_NAMES` order.
        class_index: the class explained.
        source_size: ``(height, width)`` of the image as decoded, before cropping.
    """

    saliency: np.ndarray
    image: np.ndarray
    probabilities: np.ndarray
    class_index: int
    source_size: tuple[int, int]

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_index]


class PixelModel:
    """A MARCO network as a function from prepared pixels to the four class logits.

    Args:
        network: float32 ``[batch, size, size, 3]`` in [-1, 1] to ``[batch, 4]``
            logits, differentiable with respect to its input.
        input_size: the side of the square images it takes.
        name: what to call it in messages.
    """

    def __init__(self, network: Network, input_size: int, name: str = "model") -> None:
        self.network = network
        self.input_size = int(input_size)
        self.name = name
        self._owner: object = None  # what holds the network's variables, kept alive

    @classmethod
    def from_keras(cls, model: tf.keras.Model) -> PixelModel:
        """A Keras model from :func:`components.model.inception.build_model` (or alike)."""
        from components.trainer.export import input_side

        return cls(lambda images: model(images, training=False), input_side(model), model.name)

    @classmethod
    def from_saved_model(cls, model_dir: str) -> PixelModel:
        """A SavedModel written by :func:`components.trainer.export.export_model`.

        Its signatures take encoded image bytes, which cannot be differentiated; the
        network itself is the Keras model's call function, saved with it, which takes
        prepared pixels (the TF Lite export uses the same function).

        Raises:
            ValueError: naming the folder, when the SavedModel has no such function.
        """
        from components.tools.scoring.tflite import network_input_size

        loaded = tf.saved_model.load(str(model_dir))
        try:
            size = network_input_size(loaded)
        except ValueError as exc:
            raise ValueError(f"{model_dir}: {exc} (the released MARCO model: import it with "
                             "`marco import-released` first)") from None

        def network(images: tf.Tensor) -> tf.Tensor:
            return loaded(images, training=False)

        model = cls(network, size, str(model_dir))
        model._owner = loaded
        return model

    def prepare(self, image_bytes: bytes) -> tuple[np.ndarray, tuple[int, int]]:
        """(the network's input for one encoded image, the image's decoded (height, width)).

        Raises:
            tf.errors.OpError: when TensorFlow cannot decode the bytes.
        """
        data = tf.constant(image_bytes)
        shape = tf.shape(preprocessing.decode_image(data, dtype=tf.uint8))
        image = preprocessing.eval_preprocess(data, self.input_size)
        return image.numpy(), (int(shape[0]), int(shape[1]))


class SmoothGrad:
    """Computes SmoothGrad heatmaps of one model with fixed settings.

    The first image of each batch size traces the gradient graph (seconds for the
    ``paper`` model); later images reuse it.
    """

    def __init__(self, model: PixelModel, settings: SmoothGradSettings | None = None) -> None:
        self.model = model
        self.settings = settings or SmoothGradSettings()
        self._gradient_sum = tf.function(self._batch_gradient_sum)
        self._logits = tf.function(lambda image: model.network(image[tf.newaxis])[0])

    def _batch_gradient_sum(self, image: tf.Tensor, class_index: tf.Tensor,
                            first_sample: tf.Tensor, sigma: tf.Tensor, count: int) -> tf.Tensor:
        """Sum over samples ``first_sample .. first_sample + count - 1`` of the gradients."""
        seed = tf.constant(self.settings.seed, tf.int64)
        first = tf.cast(first_sample, tf.int64)
        noise = tf.stack([
            tf.random.stateless_normal(tf.shape(image), seed=tf.stack([seed, first + i]))
            for i in range(count)
        ])
        batch = image[tf.newaxis] + sigma * noise
        with tf.GradientTape() as tape:
            tape.watch(batch)
            logits = tf.cast(self.model.network(batch), tf.float32)
            score = tf.reduce_sum(tf.gather(logits, class_index, axis=1))
        return tf.reduce_sum(tape.gradient(score, batch), axis=0)

    def explain_prepared(self, image: np.ndarray, class_index: int | None,
                         source_size: tuple[int, int] | None = None) -> Explanation:
        """The heatmap of a prepared image (``[size, size, 3]`` in [-1, 1]).

        Args:
            image: as :meth:`PixelModel.prepare` returns it.
            class_index: the class to explain; None for the class the model predicts.
            source_size: the image's size before preparation, recorded in the result.
        """
        settings = self.settings
        size = self.model.input_size
        image = np.asarray(image, dtype=np.float32)
        if image.shape != (size, size, 3):
            raise ValueError(f"{self.model.name} takes [{size}, {size}, 3] images, "
                             f"got {list(image.shape)}")
        pixels = tf.constant(image)
        probabilities = tf.nn.softmax(tf.cast(self._logits(pixels), tf.float32)).numpy()
        if class_index is None:
            class_index = int(np.argmax(probabilities))
        if not 0 <= class_index < NUM_CLASSES:
            raise ValueError(f"class index {class_index} is not one of 0..{NUM_CLASSES - 1}")
        sigma = tf.constant(settings.noise * float(image.max() - image.min()), tf.float32)
        total = np.zeros(image.shape, np.float64)
        for first in range(0, settings.samples, settings.batch_size):
            count = min(settings.batch_size, settings.samples - first)
            total += self._gradient_sum(pixels, tf.constant(class_index, tf.int32),
                                        tf.constant(first, tf.int64), sigma, count).numpy()
        mean_gradient = total / settings.samples
        saliency = np.abs(mean_gradient).sum(axis=-1).astype(np.float32)
        return Explanation(saliency, image, probabilities.astype(np.float32), class_index,
                           tuple(source_size) if source_size else (size, size))

    def explain(self, image_bytes: bytes, class_index: int | None) -> Explanation:
        """The heatmap of one encoded image (JPEG, PNG, GIF or BMP).

        Raises:
            tf.errors.OpError: when TensorFlow cannot decode the bytes.
        """
        image, source_size = self.model.prepare(image_bytes)
        return self.explain_prepared(image, class_index, source_size)
