"""Exports the trained model as a SavedModel with MARCO's serving contract.

Signatures:
- ``serving_default``: the released MARCO model's contract, kept so existing tools
  work unchanged: input ``image_bytes`` (a batch of encoded JPEG/PNG images),
  outputs ``classes`` (the released model's class names: ``Clear``, ``Crystals``,
  ``Other``, ``Precipitate``) and ``scores`` (probabilities), 4 per image,
  sorted by score, highest first.
- ``probabilities``: input ``image_bytes``; output ``probabilities``, one per class
  in MARCO's fixed order (clear, crystals, other, precipitate).
- ``serving_examples``: input serialized raw tf.Examples (as ingestion writes them);
  applies the Transform graph and returns ``probabilities``. TFMA calls this one.
- ``transform_features``: raw tf.Examples in, transformed features (the 4-class
  ``label`` among them) out: TFMA's preprocessing function for labels.

Evaluation-time preprocessing is the one function training uses for its evaluation
data (:func:`components.model.preprocessing.eval_preprocess`). Malformed image bytes
make the call fail with an InvalidArgumentError naming the problem; a TF Serving
process returns that error to the client and keeps serving.
"""

from __future__ import annotations

import tensorflow as tf

from components import runtime
from components.model import preprocessing
from components.names import (
    BYTES_INPUT,
    CLASSES_OUTPUT,
    EXAMPLES_INPUT,
    IMAGE_KEY,
    NUM_CLASSES,
    PROBABILITIES_SIGNATURE,
    SCORES_OUTPUT,
    SERVING_CLASS_NAMES,
    SERVING_DEFAULT,
)
from components.names import PROBABILITIES_OUTPUT as PROBABILITIES
from components.names import SERVING_EXAMPLES_SIGNATURE as SERVING_EXAMPLES
from components.names import TRANSFORM_FEATURES_SIGNATURE as TRANSFORM_FEATURES

runtime.skip_autograph_for_tf_keras()


def input_side(model: tf.keras.Model) -> int:
    """The side of the square images ``model`` takes (its Input layer's)."""
    _, height, width, _ = model.input_shape
    if height is None or height != width:
        raise ValueError(f"{model.name} takes {model.input_shape[1:3]} images; the "
                         "serving signatures need a fixed square input")
    return int(height)


def _probabilities_fn(model: tf.keras.Model):
    input_size = input_side(model)

    @tf.function
    def probabilities(image_bytes: tf.Tensor) -> tf.Tensor:
        images = tf.map_fn(
            lambda b: preprocessing.eval_preprocess(b, input_size),
            image_bytes,
            fn_output_signature=tf.TensorSpec([input_size, input_size, 3], tf.float32),
        )
        logits = model(images, training=False)
        return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)

    return probabilities


def build_signatures(model: tf.keras.Model, tf_transform_output=None) -> dict:
    """The concrete functions to save; ``tf_transform_output`` adds the tf.Example ones.

    Images are resized to the model's own input side.
    """
    probabilities = _probabilities_fn(model)
    class_names = tf.constant(SERVING_CLASS_NAMES)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    def serve_bytes(image_bytes):
        scores, indices = tf.math.top_k(probabilities(image_bytes), k=NUM_CLASSES)
        return {CLASSES_OUTPUT: tf.gather(class_names, indices), SCORES_OUTPUT: scores}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    def serve_probabilities(image_bytes):
        return {PROBABILITIES: probabilities(image_bytes)}

    signatures = {
        SERVING_DEFAULT: serve_bytes.get_concrete_function(),
        PROBABILITIES_SIGNATURE: serve_probabilities.get_concrete_function(),
    }
    if tf_transform_output is not None:
        model.tft_layer = tf_transform_output.transform_features_layer()
        raw_spec = tf_transform_output.raw_feature_spec()

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
        def transform_features(examples):
            parsed = tf.io.parse_example(examples, raw_spec)
            transformed = model.tft_layer(parsed)
            # Image bytes stay out: TFMA only needs the label and slicing features.
            return {k: v for k, v in transformed.items() if k != IMAGE_KEY}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
        def serve_examples(examples):
            parsed = tf.io.parse_example(examples, raw_spec)
            transformed = model.tft_layer(parsed)
            image_bytes = tf.reshape(transformed[IMAGE_KEY], [-1])
            return {PROBABILITIES: probabilities(image_bytes)}

        signatures[SERVING_EXAMPLES] = serve_examples.get_concrete_function()
        signatures[TRANSFORM_FEATURES] = transform_features.get_concrete_function()
    return signatures


def _has_distributed_variables(model: tf.keras.Model) -> bool:
    return any(isinstance(w, tf.distribute.DistributedValues) for w in model.weights)


def with_plain_variables(model: tf.keras.Model) -> tf.keras.Model:
    """``model``, or, if a distribution strategy holds its variables, a plain copy.

    Concrete functions traced from a model whose variables are distributed (built in
    a MirroredStrategy or MultiWorkerMirroredStrategy scope) cannot be saved, so the
    export uses a clone with ordinary variables and the same weights. Call it outside
    the strategy's scope on every worker of a multi-worker strategy: reading the
    weights (batch-norm statistics are aggregated across workers) is a collective
    operation.
    """
    if not _has_distributed_variables(model):
        return model
    if tf.distribute.has_strategy():
        raise RuntimeError(
            f"{model.name} holds distributed variables: export it outside the "
            "distribution strategy's scope, where its copy gets plain ones"
        )
    copy = tf.keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def export_model(model: tf.keras.Model, export_dir: str, tf_transform_output=None) -> None:
    """Saves ``model`` with the signatures above to ``export_dir``.

    A model trained under a distribution strategy is saved as a copy with plain
    variables (:func:`with_plain_variables`); every worker of a multi-worker strategy
    must call this, and only one of them (the chief) should write the real export.
    """
    model = with_plain_variables(model)
    signatures = build_signatures(model, tf_transform_output)
    model.save(export_dir, save_format="tf", signatures=signatures, include_optimizer=False)

