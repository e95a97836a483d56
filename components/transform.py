"""Transform's preprocessing_fn: collapse each institution's native label to MARCO's 4 classes,
unless an expert's override (the catalogue's overrides files, applied by ingestion)
gave the example another class.

Referenced by dotted path (``preprocessing_fn="components.transform.preprocessing_fn"``)
so TFX imports it from the installed project instead of packaging a module file. The
mapping is the catalogue's own table (:meth:`Catalogue.mapping_rows`), read when the
function is traced; no second copy of it exists. Image bytes pass through untouched:
decoding, cropping and augmentation belong to the trainer's input pipeline, which has
to run them per epoch anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from components.catalogue import Catalogue, load_catalogue
from components.names import (
    CLASS_NAMES,
    IMAGE_ID_KEY,
    IMAGE_KEY,
    INSTITUTION_KEY,
    LABEL_KEY,
    NATIVE_LABEL_KEY,
    OVERRIDE_CLASS_KEY,
)

CATALOGUE_DIR_CONFIG = "catalogue_dir"
# Joins institution and native label into one lookup key; neither may contain it.
KEY_SEPARATOR = "\x1f"
UNMAPPED = -1
PASSTHROUGH_KEYS = (IMAGE_KEY, INSTITUTION_KEY, NATIVE_LABEL_KEY, IMAGE_ID_KEY)


def label_table(catalogue: Catalogue) -> tf.lookup.StaticHashTable:
    """(institution, native label) -> class id, built from the catalogue's mapping rows.

    Unknown pairs give ``UNMAPPED`` (-1). Ingestion quarantines them and
    ExampleValidator stops the run on an unknown institution or label, so -1 never
    reaches the trainer from this pipeline; it is kept rather than an assertion so
    that the saved transform graph cannot fail at serving time.
    """
    rows = catalogue.mapping_rows()
    for code, native, _ in rows:
        if KEY_SEPARATOR in code or KEY_SEPARATOR in native:
            raise ValueError(f"{code}/{native!r} contains the lookup key separator")
    keys = tf.constant([f"{code}{KEY_SEPARATOR}{native}" for code, native, _ in rows])
    values = tf.constant([class_id for _, _, class_id in rows], dtype=tf.int64)
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(keys, values), default_value=UNMAPPED
    )


def collapse_labels(
    institution: tf.Tensor, native_label: tf.Tensor, table: tf.lookup.StaticHashTable
) -> tf.Tensor:
    """The 4-class id of each (institution, native label) pair, shaped like the inputs."""
    return table.lookup(tf.strings.join([institution, native_label], separator=KEY_SEPARATOR))


def class_table() -> tf.lookup.StaticHashTable:
    """Class name -> class id; any other text gives ``UNMAPPED``."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(CLASS_NAMES), tf.range(len(CLASS_NAMES), dtype=tf.int64)
        ),
        default_value=UNMAPPED,
    )


def override_classes(override: tf.Tensor | tf.SparseTensor | None, batch: tf.Tensor) -> tf.Tensor:
    """An example's override class name as a ``[batch, 1]`` string, "" where none.

    The feature is optional in the schema, so Transform parses it as sparse; a batch
    without any override holds no value at all.
    """
    if override is None:
        return tf.fill([batch, 1], "")
    if isinstance(override, tf.SparseTensor):
        override = tf.sparse.to_dense(override, default_value="")
    padded = tf.concat([override, tf.fill([batch, 1], "")], axis=1)
    # A fixed second dimension: Transform writes the label as a FixedLenFeature.
    return tf.reshape(padded[:, :1], [-1, 1])


def apply_overrides(
    labels: tf.Tensor, override: tf.Tensor, table: tf.lookup.StaticHashTable
) -> tf.Tensor:
    """``labels`` with each example's override class id where it has one."""
    overridden = table.lookup(override)
    return tf.where(overridden >= 0, overridden, labels)


def preprocessing_fn(
    inputs: Mapping[str, tf.Tensor], custom_config: Mapping[str, Any] | None = None
) -> dict[str, tf.Tensor]:
    """TFT preprocessing: add ``label`` and keep the bytes and slicing features as they are.

    The label is the catalogue's class of the native label, or, on an example an
    expert's override reached at ingestion, the override's class.

    Args:
        inputs: parsed raw features (dense ``[batch, 1]`` per schemas/schema.pbtxt).
        custom_config: Transform's ``custom_config``; ``catalogue_dir`` selects a
            catalogue other than the project's (tests, a lab's own deployment).
    """
    # Plain Python, run once while tracing. TFT traces without autograph; a caller that
    # traces with it would otherwise convert the whole catalogue loader (a minute).
    catalogue = tf.autograph.experimental.do_not_convert(load_catalogue)(
        (custom_config or {}).get(CATALOGUE_DIR_CONFIG))
    # Built outside the traced function, so the table is initialised once rather than
    # on every batch (tensorflow/transform#249).
    with tf.init_scope():
        table = label_table(catalogue)
        classes = class_table()
    outputs = {key: tf.identity(inputs[key]) for key in PASSTHROUGH_KEYS}
    labels = collapse_labels(inputs[INSTITUTION_KEY], inputs[NATIVE_LABEL_KEY], table)
    override = override_classes(inputs.get(OVERRIDE_CLASS_KEY), tf.shape(labels)[0])
    outputs[LABEL_KEY] = apply_overrides(labels, override, classes)
    return outputs
