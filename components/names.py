"""One place for the names and defaults shared by every part of the pipeline.

Class names and their order are MARCO's published ones (ids 0-3); feature keys are
the project's example format (see README, "Example format"); signature names are the
exported model's serving contract (:mod:`components.trainer.export`).
"""

from __future__ import annotations

# MARCO's 4 classes, in the order of the published ids.
CLASS_NAMES: tuple[str, ...] = ("clear", "crystals", "other", "precipitate")
CLASS_IDS: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
NUM_CLASSES = len(CLASS_NAMES)
# The same classes as the released MARCO model's serving signature spells them in its
# ``classes`` output; existing clients look scores up by these exact byte strings.
SERVING_CLASS_NAMES: tuple[str, ...] = tuple(name.capitalize() for name in CLASS_NAMES)

# Feature keys of the project's tf.Example format (one image per example).
IMAGE_KEY = "image_bytes"
FORMAT_KEY = "image_format"
HEIGHT_KEY = "image_height"
WIDTH_KEY = "image_width"
CHANNELS_KEY = "image_channels"
INSTITUTION_KEY = "institution"
NATIVE_LABEL_KEY = "native_label"
IMAGE_ID_KEY = "image_id"
PLATE_KEY = "plate"
WELL_KEY = "well"
IMAGED_AT_KEY = "imaged_at"
SOURCE_PATH_KEY = "source_path"
# Where the example's label comes from ("catalogue" or "override"), and the class an
# expert's override gives it (see components/records.py).
LABEL_SOURCE_KEY = "label_source"
OVERRIDE_CLASS_KEY = "override_class"

# Derived by Transform, never stored by ingestion.
LABEL_KEY = "label"

# Keys of the published MARCO TFRecord shards.
MARCO_ENCODED = "image/encoded"
MARCO_LABEL = "image/class/label"
MARCO_RAW = "image/class/raw"
MARCO_SOURCE = "image/class/source"
MARCO_TEXT = "image/class/text"
MARCO_FILENAME = "image/filename"
MARCO_ID = "image/id"
MARCO_HEIGHT = "image/height"
MARCO_WIDTH = "image/width"
MARCO_FORMAT = "image/format"
MARCO_COLORSPACE = "image/colorspace"
MARCO_CHANNELS = "image/channels"

TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
# Share of image ids, in percent, that go to the eval split unless a run says otherwise.
DEFAULT_EVAL_PERCENT = 10

# Signatures of the exported model, and their inputs and outputs.
SERVING_DEFAULT = "serving_default"  # the released MARCO model's: classes and scores
PROBABILITIES_SIGNATURE = "probabilities"  # image bytes in, probabilities out
SERVING_EXAMPLES_SIGNATURE = "serving_examples"  # raw tf.Examples in, probabilities out
TRANSFORM_FEATURES_SIGNATURE = "transform_features"  # raw tf.Examples in, features out
BYTES_INPUT = "image_bytes"
EXAMPLES_INPUT = "examples"
PROBABILITIES_OUTPUT = "probabilities"
CLASSES_OUTPUT = "classes"
SCORES_OUTPUT = "scores"

# The Trainer reports each finished epoch on this logger, with these record attributes
# (epoch, epochs, and Keras' logs of the epoch: loss, accuracy, ...); the local runner's
# progress lines are made from them.
EPOCH_LOGGER = "components.trainer.epochs"
EPOCH_ATTRIBUTE = "marco_epoch"
EPOCHS_ATTRIBUTE = "marco_epochs"
EPOCH_LOGS_ATTRIBUTE = "marco_epoch_logs"

NO_DATA_SOURCE = "nothing to ingest: give data_dir, marco_shards or both"


def require_data_source(data_dir: object, marco_shards: object) -> None:
    """Fails unless a run reads raw institution folders, published MARCO shards or both.

    Raises:
        ValueError: with :data:`NO_DATA_SOURCE`, when both are empty.
    """
    if not data_dir and not marco_shards:
        raise ValueError(NO_DATA_SOURCE)
