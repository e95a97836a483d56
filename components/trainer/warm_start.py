"""Warm starts and frozen layers: a new network from an earlier model's weights.

``--init-from SERVING_DIR`` (``PipelineConfig.init_from``) names a model the project
exported before: a serving folder (its newest numbered version is taken, as TF
Serving and ``marco score`` take it), one version folder, or any SavedModel folder
written by :func:`components.trainer.export.export_model`, such as the released MARCO
weights imported by ``marco import-released`` or an earlier run's pushed model. Its
Keras network is loaded and its weights are copied, layer by layer and by layer name,
into the network the Trainer has just built. Both must be the same preset: a layer or
tensor the new network has and the init model lacks, or has with another shape, or a
layer only the init model has, stops training with that name. The input size may
differ (a model exported at its serving size), since no weight depends on it.

``TrainingConfig.trainable_layers`` freezes the rest of the network: a frozen layer's
weights get no gradient, and its batch norm runs in inference mode, so its moving
statistics stay exactly as they were loaded.
"""

from __future__ import annotations

import fnmatch
import logging

import tensorflow as tf

from components.baseline.served import init_model

log = logging.getLogger(__name__)


class InitModelMismatch(ValueError):
    """The init model's network differs from the one being trained; names the layer."""


def load_init_network(path: str) -> tuple[tf.keras.Model, str]:
    """The Keras network of the model at ``path`` and the folder it was loaded from."""
    model_dir = init_model(path).path
    try:
        network = tf.keras.models.load_model(model_dir, compile=False)
    except Exception as exc:  # any loading failure gets the folder's name
        raise InitModelMismatch(
            f"init model {model_dir}: not a Keras network this project exported "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
        ) from exc
    return network, model_dir


def _weighted_layers(model: tf.keras.Model) -> dict[str, tf.keras.layers.Layer]:
    return {layer.name: layer for layer in model.layers if layer.weights}


def _leaf(weight: tf.Variable) -> str:
    return weight.name.split(":")[0].rsplit("/", 1)[-1]


def copy_weights_by_name(
    source: tf.keras.Model, target: tf.keras.Model, source_name: str = "init model"
) -> int:
    """Copies every weight of ``source`` into the layer of the same name in ``target``.

    Checked completely, in ``target``'s layer order, before anything is assigned.

    Returns:
        The number of values copied.

    Raises:
        InitModelMismatch: naming the first layer or tensor that differs: a layer of
            ``target`` that ``source`` lacks, a tensor of another name or shape, or a
            layer only ``source`` has.
    """
    sources = _weighted_layers(source)
    targets = _weighted_layers(target)
    pairs: list[tuple[tf.Variable, tf.Variable]] = []
    for name, layer in targets.items():
        if name not in sources:
            raise InitModelMismatch(
                f"{source_name} has no layer {name!r}, which the network being trained "
                "has: is it a model of another preset?"
            )
        theirs, ours = sources[name].weights, layer.weights
        if [_leaf(w) for w in theirs] != [_leaf(w) for w in ours]:
            raise InitModelMismatch(
                f"{source_name}: layer {name!r} holds tensors "
                f"{[_leaf(w) for w in theirs]}; the network being trained needs "
                f"{[_leaf(w) for w in ours]}"
            )
        for their, our in zip(theirs, ours, strict=True):
            if their.shape != our.shape:
                raise InitModelMismatch(
                    f"{source_name}: tensor {name}/{_leaf(our)} has shape "
                    f"{list(their.shape)}; the network being trained needs {list(our.shape)}"
                )
            pairs.append((their, our))
    extra = [name for name in sources if name not in targets]
    if extra:
        raise InitModelMismatch(
            f"{source_name} has layer {extra[0]!r}, which the network being trained lacks: "
            "is it a model of another preset?"
        )
    values = 0
    for their, our in pairs:
        our.assign(their.numpy())
        values += int(our.shape.num_elements())
    return values


def warm_start(model: tf.keras.Model, init_from: str) -> str:
    """Loads the weights of the model at ``init_from`` into ``model``; returns its folder."""
    network, model_dir = load_init_network(init_from)
    values = copy_weights_by_name(network, model, f"init model {model_dir}")
    log.info("warm start: %d values from %s", values, model_dir)
    del network
    return model_dir


def trainable_patterns(setting: str | None) -> list[str]:
    """The glob patterns of ``TrainingConfig.trainable_layers`` (empty: every layer)."""
    if not setting:
        return []
    return [p.strip() for p in setting.split(",") if p.strip()]


def freeze(model: tf.keras.Model, setting: str | None) -> list[str]:
    """Makes only the layers matching ``setting`` trainable; returns their names.

    ``setting`` is a comma-separated list of glob patterns matched against whole layer
    names (slim's scopes: ``Mixed_7*`` is every layer of Mixed_7a, 7b and 7c,
    ``Logits/*`` the logits convolution). None or "" leaves every layer trainable. A
    frozen batch norm runs in inference mode (Keras' rule for non-trainable batch
    norms), so its moving statistics do not change either.

    Raises:
        ValueError: naming a pattern that matches no layer with weights.
    """
    patterns = trainable_patterns(setting)
    if not patterns:
        return [layer.name for layer in model.layers if layer.weights]
    layers = _weighted_layers(model)
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in layers):
            raise ValueError(
                f"trainable_layers: {pattern!r} matches no layer of the network (layer "
                f"names are slim's scopes, e.g. 'Mixed_7c/Branch_0/Conv2d_0a_1x1', "
                f"'Logits/Conv2d_1c_1x1')"
            )
    trainable = []
    for name, layer in layers.items():
        layer.trainable = any(fnmatch.fnmatchcase(name, p) for p in patterns)
        if layer.trainable:
            trainable.append(name)
    return trainable
