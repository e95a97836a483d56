"""``marco import-released``: the released MARCO weights in the ``paper`` network, exported as ours.

The ``paper`` preset (:data:`components.model.inception.PAPER`) is the released network
layer for layer, with slim's scope names as Keras layer names, so every tensor maps by
name: ``Inception/<layer>/weights`` to the kernel of the Conv2D layer ``<layer>``,
``Inception/<layer>/BatchNorm/{beta,moving_mean,moving_variance}`` to its batch norm,
``Inception/Logits/Conv2d_1c_1x1/{weights,biases}`` to the logits layer (its four
columns put in MARCO's class order, read from the released graph's class table). The
auxiliary head (``Inception/AuxLogits/*``), used only in training, and the training
step counter ``global_step`` have no place in the network and are dropped.

The checkpoint is checked completely before anything is written: a tensor the network
needs that is missing or has another shape, or any other tensor the network lacks,
stops the import with its name. The model is then exported with this project's
signatures (:func:`components.trainer.export.export_model`) into a temporary folder
inside ``--out``, which is renamed to the new version's number only when complete.

The tf.Example signatures (``serving_examples``, ``transform_features``) need the
Transform graph: by default it is built here from the project's schema and
``components.transform.preprocessing_fn`` (no analyzers, so no data is needed), which
is what the pipeline's Transform writes for the same catalogue; ``transform_dir`` uses
an existing Transform output instead (a run's, for a lab's own catalogue).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

from components.tools.released.graph import SCOPE, ReleasedGraph, read_released

PRESET = "paper"
AUX_SCOPE = f"{SCOPE}/AuxLogits/"
GLOBAL_STEP = "global_step"
LOGITS_LAYER = "Logits/Conv2d_1c_1x1"
IMPORT_PREFIX = ".import-"


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the ``paper`` network; the message names the tensor."""


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_released` did."""

    source: str
    serving_dir: str
    version: int
    version_dir: str
    tensors: int
    values: int
    dropped: dict[str, int]
    dropped_values: int
    class_names: tuple[str, ...]
    transform: str
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def slim_names(model) -> list[tuple[str, object]]:
    """(slim checkpoint name, Keras variable) for every weight of a ``build_model`` network.

    Raises:
        ValueError: if the model has a weight no slim name is known for.
    """
    import tensorflow as tf

    pairs: list[tuple[str, object]] = []
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.Conv2D):
            pairs.append((f"{SCOPE}/{layer.name}/weights", layer.kernel))
            if layer.use_bias:
                pairs.append((f"{SCOPE}/{layer.name}/biases", layer.bias))
        elif isinstance(layer, tf.keras.layers.BatchNormalization):
            for leaf in ("gamma", "beta", "moving_mean", "moving_variance"):
                variable = getattr(layer, leaf, None)
                if variable is not None:
                    pairs.append((f"{SCOPE}/{layer.name}/{leaf}", variable))
    mapped = {id(variable) for _, variable in pairs}
    unmapped = [w.name for w in model.weights if id(w) not in mapped]
    if unmapped:
        raise ValueError(f"no slim name for the model's weights {unmapped}")
    return pairs


def is_dropped(name: str) -> bool:
    """Whether a released tensor is one the import leaves out on purpose."""
    return name.startswith(AUX_SCOPE) or name == GLOBAL_STEP


def _dropped_group(name: str) -> str:
    return f"{AUX_SCOPE}*" if name.startswith(AUX_SCOPE) else name


def match_checkpoint(
    shapes: dict[str, list[int]], pairs: list[tuple[str, object]], checkpoint: str
) -> None:
    """Checks the checkpoint's tensor shapes against the network's, in network order.

    Raises:
        CheckpointMismatch: naming the first tensor the network needs that is missing
            or mis-shaped, or else the first tensor the checkpoint has beyond the
            network and the dropped ones.
    """
    for name, variable in pairs:
        needed = [int(d) for d in variable.shape]
        if name not in shapes:
            raise CheckpointMismatch(f"{checkpoint}: no tensor {name} (the paper network's "
                                     f"{variable.name.split(':')[0]}, shape {needed})")
        found = [int(d) for d in shapes[name]]
        if found != needed:
            raise CheckpointMismatch(f"{checkpoint}: tensor {name} has shape {found}; the "
                                     f"paper network needs {needed}")
    known = {name for name, _ in pairs}
    extra = sorted(n for n in shapes if n not in known and not is_dropped(n))
    if extra:
        raise CheckpointMismatch(f"{checkpoint}: tensor {extra[0]} is not part of the paper "
                                 f"network ({len(extra)} such tensors)")


def transform_output(transform_dir: str | None, scratch: str):
    """The Transform output for the tf.Example signatures, and how it was obtained."""
    import tensorflow_transform as tft

    if transform_dir:
        return tft.TFTransformOutput(transform_dir), transform_dir
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    from components.transform import preprocessing_fn
    from schemas import SCHEMA_FILE

    schema = text_format.Parse(SCHEMA_FILE.read_text(), schema_pb2.Schema())
    metadata = dataset_metadata.DatasetMetadata(schema)
    out = os.path.join(scratch, "transform")
    with beam.Pipeline(runner="DirectRunner") as pipeline, \
            tft_beam.Context(temp_dir=os.path.join(scratch, "tft-tmp")):
        raw = pipeline | "NoExamples" >> beam.Create([], reshuffle=False)
        transform_fn = (raw, metadata) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | "Write" >> tft_beam.WriteTransformFn(out)
    # The raw schema beside it, where TFX's Transform puts it (the tf.Example parsers).
    metadata_io.write_metadata(metadata, os.path.join(out, tft.TFTransformOutput.RAW_METADATA_DIR))
    return tft.TFTransformOutput(out), f"built from {SCHEMA_FILE.name} and the catalogue"


def load_released_weights(model, released: ReleasedGraph) -> tuple[int, int, dict[str, int], int]:
    """Checks the released checkpoint against ``model`` and loads it.

    Returns:
        (tensors loaded, values loaded, dropped tensors by group, dropped values).

    Raises:
        CheckpointMismatch: see :func:`match_checkpoint`; nothing is loaded then.
    """
    import numpy as np
    import tensorflow as tf

    checkpoint = released.checkpoint_prefix
    try:
        reader = tf.train.load_checkpoint(checkpoint)
    except (tf.errors.OpError, ValueError) as exc:
        raise CheckpointMismatch(f"{checkpoint}: cannot read the checkpoint: {exc}") from None
    shapes = reader.get_variable_to_shape_map()
    pairs = slim_names(model)
    match_checkpoint(shapes, pairs, checkpoint)
    order = list(released.class_order)
    values = 0
    for name, variable in pairs:
        try:
            value = reader.get_tensor(name)
        except (tf.errors.OpError, ValueError) as exc:  # e.g. a truncated data file
            raise CheckpointMismatch(f"{checkpoint}: cannot read tensor {name}: "
                                     f"{getattr(exc, 'message', exc)}") from None
        if name.startswith(f"{SCOPE}/{LOGITS_LAYER}/"):
            # Column i of the released logits is the class class_order[i] of ours.
            arranged = np.empty_like(value)
            arranged[..., order] = value
            value = arranged
        variable.assign(value.astype(variable.dtype.as_numpy_dtype))
        values += int(value.size)
    dropped: dict[str, int] = {}
    dropped_values = 0
    for name in shapes:
        if is_dropped(name):
            group = _dropped_group(name)
            dropped[group] = dropped.get(group, 0) + 1
            dropped_values += int(np.prod(shapes[name], dtype=np.int64))
    return len(pairs), values, dropped, dropped_values


def new_version(serving_dir: str) -> int:
    """A version number (Unix time, as the Pusher uses) not yet in ``serving_dir``."""
    version = int(time.time())
    while os.path.exists(os.path.join(serving_dir, str(version))):
        version += 1
    return version


def import_released(
    saved_model_dir: str,
    serving_dir: str,
    *,
    transform_dir: str | None = None,
) -> ImportSummary:
    """Imports the released model in ``saved_model_dir`` as a new version of ``serving_dir``.

    Args:
        saved_model_dir: the released SavedModel folder (``saved_model.pb`` and
            ``variables/``; savedmodel.zip unpacked).
        serving_dir: local serving folder; the model becomes ``<serving_dir>/<version>``.
        transform_dir: an existing Transform output for the tf.Example signatures
            (default: built from the project's schema and catalogue).

    Raises:
        components.tools.released.graph.NotReleasedModel: when the folder is not the
            released model.
        CheckpointMismatch: when its checkpoint does not fit the paper network; nothing
            is written.
    """
    started = time.perf_counter()
    released = read_released(os.path.abspath(saved_model_dir))
    if os.path.isfile(serving_dir):
        raise ValueError(f"--out {serving_dir}: is a file, not a folder")

    from components.model.inception import PRESETS, build_model
    from components.trainer.export import export_model

    config = PRESETS[PRESET]
    if released.input_size != config.input_size:
        raise CheckpointMismatch(f"{saved_model_dir}: the graph takes {released.input_size} px "
                                 f"images; the paper network takes {config.input_size}")
    model = build_model(config)
    tensors, values, dropped, dropped_values = load_released_weights(model, released)

    serving_dir = os.path.abspath(serving_dir)
    created = not os.path.exists(serving_dir)
    os.makedirs(serving_dir, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=IMPORT_PREFIX, dir=serving_dir)
    try:
        transform, transform_source = transform_output(transform_dir, scratch)
        staged = os.path.join(scratch, "model")
        export_model(model, staged, transform)
        version = new_version(serving_dir)
        version_dir = os.path.join(serving_dir, str(version))
        os.replace(staged, version_dir)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if created and not os.listdir(serving_dir):
            os.rmdir(serving_dir)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    return ImportSummary(
        source=released.model_dir,
        serving_dir=serving_dir,
        version=version,
        version_dir=version_dir,
        tensors=tensors,
        values=values,
        dropped=dropped,
        dropped_values=dropped_values,
        class_names=released.class_names,
        transform=transform_source,
        seconds=time.perf_counter() - started,
    )
