"""The released MARCO serving graph saved again with random weights.

The released ``saved_model.pb`` and ``variables/variables.index`` hold the serving
graph and every variable's name, shape and dtype, but not the weights. Importing the
MetaGraph, running the graph's own initialisers, giving every variable a random value
and saving with TensorFlow's SavedModel builder gives a working SavedModel in the
released format: the same graph, preprocessing and signatures that clients of the
released model meet, only untrained. Tests and benchmarks use it where the real
weights are not available.

The random values keep every activation finite and the softmax unsaturated, so that
comparisons see real numbers: fan-in-scaled (He) convolution kernels, small random
batch-norm offsets and moving means, moving variances near one, and a logits layer
scaled down so that the four probabilities stay well inside (0, 1). Every tensor gets
distinct random values (none is left at its initialiser's zeros or ones), so that a
tensor loaded into the wrong place changes the output.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from components.tools.released.graph import (
    SCOPE,
    SERVE_TAG,
    read_saved_model,
    serve_meta_graph,
)

LOGITS_SCALE = 1.0
LEGACY_INIT_OP = "legacy_init_op"


def random_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random value for the slim variable ``name`` (see the module docstring)."""
    shape = tuple(int(s) for s in shape)
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "weights":
        fan_in = int(np.prod(shape[:-1])) or 1
        scale = np.sqrt(2.0 / fan_in)
        if f"{SCOPE}/Logits/" in name or "/AuxLogits/Conv2d_2b" in name:
            scale *= LOGITS_SCALE
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    if leaf in ("beta", "moving_mean"):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)
    if leaf == "moving_variance":
        return rng.uniform(0.8, 1.25, shape).astype(np.float32)
    if leaf == "biases":
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    return np.zeros(shape, np.float32)


def save_with_random_weights(source_dir: str, out_dir: str, seed: int = 0) -> str:
    """Writes the released graph of ``source_dir`` with random weights to ``out_dir``.

    Args:
        source_dir: a folder with the released ``saved_model.pb`` (the variables'
            values are not read; the graph's own variable definitions are used).
        out_dir: the SavedModel folder to write; must not exist yet. It is written
            under a temporary name beside it and renamed when complete.
        seed: of the random values.

    Returns:
        ``out_dir``.
    """
    import tensorflow as tf

    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} exists already")
    meta_graph = serve_meta_graph(read_saved_model(source_dir))
    if meta_graph is None:
        raise ValueError(f"{source_dir}: no MetaGraph tagged {SERVE_TAG!r}")
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".random-released-", dir=parent)
    staged = os.path.join(scratch, "model")
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.compat.v1.train.import_meta_graph(meta_graph, clear_devices=True)
            variables = tf.compat.v1.global_variables()
            # One assignment op per variable, all run in one call: each separate call
            # would prune the 7,000-node graph again.
            feeds, assignments, others = {}, [], []
            for variable in sorted(variables, key=lambda v: v.op.name):
                if variable.dtype.base_dtype != tf.float32:
                    others.append(variable)  # global_step keeps its initial 0
                    continue
                shape = tuple(variable.shape.as_list())
                value = tf.compat.v1.placeholder(tf.float32, shape)
                assignments.append(tf.compat.v1.assign(variable, value))
                feeds[value] = random_value(variable.op.name, shape, rng)
            with tf.compat.v1.Session(graph=graph) as session:
                session.run([tf.compat.v1.variables_initializer(others), *assignments], feeds)
                builder = tf.compat.v1.saved_model.Builder(staged)
                builder.add_meta_graph_and_variables(
                    session,
                    [SERVE_TAG],
                    signature_def_map=dict(meta_graph.signature_def),
                    saver=tf.compat.v1.train.Saver(variables, sharded=True),
                )
                builder.save()
        os.replace(staged, out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir
