"""TF Lite export of a pushed MARCO model, for imager PCs and devices without TensorFlow.

The SavedModel's signatures take encoded image bytes and decode them with TensorFlow
ops (DecodeJpeg, DecodePng, ...) that are not TF Lite builtins. Rather than pulling
in the Flex delegate (the full TensorFlow kernels, tens of megabytes, not on every
platform), the TF Lite model starts after decoding:

- input ``image``: float32 ``[1, size, size, 3]``, the image prepared as MARCO's
  evaluation does: centre square crop (the whole short side), bilinear resize to
  ``size`` (599 for the ``paper`` model), RGB scaled from [0, 1] to [-1, 1]
  (``x / 127.5 - 1`` for 8-bit values);
- output ``probabilities``: float32 ``[1, 4]`` in MARCO's class order (clear,
  crystals, other, precipitate), the same numbers as the SavedModel's
  ``probabilities`` signature.

Builtin operators only, float32 weights. :func:`prepare_image` is that preparation
in TensorFlow (the one the SavedModel runs); other clients can use any image library
with the same steps (see docs/serving.md).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from components import runtime
from components.model import preprocessing
from components.names import BYTES_INPUT, PROBABILITIES_SIGNATURE
from components.names import PROBABILITIES_OUTPUT as PROBABILITIES
from components.tools.serving import ServedModel

runtime.skip_autograph_for_tf_keras()

IMAGE_INPUT = "image"
DEFAULT_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class TFLiteExport:
    """What :func:`export_tflite` wrote, and how closely it matches the SavedModel."""

    path: str
    input_size: int
    size_bytes: int
    max_abs_difference: float | None = None


def network_input_size(loaded) -> int:
    """The square input side of the network inside a SavedModel loaded with TF2.

    Read from the input signature of the Keras model's restored call function.

    Raises:
        ValueError: when the SavedModel has no such function (not a Keras export).
    """
    try:
        functions = loaded.__call__.concrete_functions
    except AttributeError:
        functions = ()
    for function in functions:
        args, _ = function.structured_input_signature
        for spec in tf.nest.flatten(args):
            if isinstance(spec, tf.TensorSpec) and spec.shape.rank == 4:
                height, width = spec.shape[1], spec.shape[2]
                if height is not None and height == width:
                    return int(height)
    raise ValueError("the SavedModel has no Keras call function with a square image input; "
                     "export it with components.trainer.export")


def convert(model_dir: str) -> tuple[bytes, int]:
    """The TF Lite flatbuffer of the SavedModel in ``model_dir`` and its input size.

    The network is the Keras model's restored call function with the softmax the
    ``probabilities`` signature applies. The converter is given a plain module holding
    only the weights, not the restored Keras object, which it would otherwise serialise
    again layer by layer first.
    """
    loaded = tf.saved_model.load(model_dir)
    size = network_input_size(loaded)
    holder = tf.Module()
    holder.model_variables = list(loaded.variables)

    @tf.function(
        input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name=IMAGE_INPUT)],
        autograph=False,
    )
    def probabilities(image: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = loaded(image, training=False)
        return {PROBABILITIES: tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    holder.probabilities = probabilities
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [probabilities.get_concrete_function()], holder
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert(), size


def prepare_image(image_bytes: bytes, size: int) -> np.ndarray:
    """The TF Lite model's input for one encoded image: ``[1, size, size, 3]`` float32.

    Raises:
        tf.errors.InvalidArgumentError: when the bytes are not a decodable image.
    """
    image = preprocessing.eval_preprocess(tf.constant(image_bytes), size)
    return image.numpy()[np.newaxis]


class TFLiteScorer:
    """Runs a MARCO TF Lite model on prepared images (not thread-safe: one per thread)."""

    def __init__(self, model: bytes | str) -> None:
        if isinstance(model, bytes):
            self._interpreter = tf.lite.Interpreter(model_content=model)
        else:
            self._interpreter = tf.lite.Interpreter(model_path=str(model))
        self._run = self._interpreter.get_signature_runner()
        details = self._run.get_input_details()[IMAGE_INPUT]
        self.input_size = int(details["shape"][1])

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """``[4]`` probabilities for one image prepared by :func:`prepare_image`."""
        return self._run(**{IMAGE_INPUT: image.astype(np.float32)})[PROBABILITIES][0]

    def score_bytes(self, image_bytes: bytes) -> np.ndarray:
        return self.probabilities(prepare_image(image_bytes, self.input_size))


def sample_images(count: int = 3, seed: int = 0) -> list[bytes]:
    """Smooth random JPEGs of a few shapes, for checking an export against its source."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        width, height = (640, 480) if index % 2 == 0 else (400, 500)
        small = rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize((width, height), Image.BILINEAR).save(
            buffer, format="JPEG", quality=90
        )
        images.append(buffer.getvalue())
    return images


def max_difference(model_dir: str, tflite_model: bytes | str, images: Sequence[bytes]) -> float:
    """Largest absolute difference of the two models' probabilities on ``images``."""
    reference = ServedModel(model_dir).run(
        PROBABILITIES_SIGNATURE, {BYTES_INPUT: np.array(list(images), dtype=object)}
    )[PROBABILITIES]
    scorer = TFLiteScorer(tflite_model)
    lite = np.stack([scorer.score_bytes(image) for image in images])
    return float(np.max(np.abs(lite - reference)))


def export_tflite(
    model_dir: str,
    out: str,
    *,
    check_images: Sequence[bytes] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> TFLiteExport:
    """Converts the SavedModel in ``model_dir`` and writes the TF Lite file ``out``.

    Args:
        model_dir: a SavedModel folder with MARCO's signatures.
        out: the ``.tflite`` file to write.
        check_images: encoded images to compare both models on (default: a few
            synthetic ones); an empty sequence skips the check.
        tolerance: largest acceptable probability difference.

    Raises:
        ValueError: when the TF Lite model's probabilities differ by more than
            ``tolerance`` (nothing is written then).
    """
    flatbuffer, size = convert(model_dir)
    images = sample_images() if check_images is None else list(check_images)
    difference = max_difference(model_dir, flatbuffer, images) if images else None
    if difference is not None and difference > tolerance:
        raise ValueError(f"the TF Lite model's probabilities differ from the SavedModel's "
                         f"by up to {difference:.2g} (tolerance {tolerance:g}); not written")
    with open(out, "wb") as handle:
        handle.write(flatbuffer)
    return TFLiteExport(str(out), size, len(flatbuffer), difference)
