"""Trains the modified Inception-v3 on transformed examples, on one device or many.

Pure training logic, usable without TFX: :func:`train_model` takes file patterns and
directories. The TFX ``run_fn`` in :mod:`components.trainer` only unpacks its
arguments and calls it, then exports with :mod:`components.trainer.export`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence

import tensorflow as tf

from components import names, runtime
from components.model import preprocessing
from components.model.inception import build_model
from components.names import IMAGE_KEY, LABEL_KEY, NUM_CLASSES
from components.trainer.config import DECODED_CACHE_LIMIT_MB, TrainingConfig
from components.trainer.warm_start import copy_weights_by_name, freeze, load_init_network

runtime.skip_autograph_for_tf_keras()

log = logging.getLogger(__name__)

BACKUP_DIR = "backup"


# Vertex AI's CLUSTER_SPEC names the worker pools of a custom job; these are the
# TensorFlow task types they stand for (pool 0 holds the one primary replica).
VERTEX_POOL_TASKS = {
    "workerpool0": "chief",
    "workerpool1": "worker",
    "workerpool2": "ps",
    "workerpool3": "evaluator",
}


def cluster_config(environ: Mapping[str, str] | None = None) -> dict:
    """This task's cluster, in the form TensorFlow reads from ``TF_CONFIG``.

    Vertex AI sets ``TF_CONFIG`` (task types ``chief``, ``worker``, ...) on every
    replica of a distributed job, and ``CLUSTER_SPEC`` (pools ``workerpool0`` ...) as
    well; the latter is read when the former is absent. AI Platform's legacy task type
    ``master`` is renamed ``chief``, the only name TensorFlow's multi-worker strategy
    accepts for it. An evaluator is never part of the training cluster.
    """
    environ = os.environ if environ is None else environ
    if environ.get("TF_CONFIG"):
        config = json.loads(environ["TF_CONFIG"])
        cluster = dict(config.get("cluster") or {})
        task = dict(config.get("task") or {})
    elif environ.get("CLUSTER_SPEC"):
        spec = json.loads(environ["CLUSTER_SPEC"])
        config = {}
        cluster = {
            VERTEX_POOL_TASKS.get(pool, pool): list(addresses)
            for pool, addresses in (spec.get("cluster") or {}).items()
        }
        cluster.pop("evaluator", None)
        task = dict(spec.get("task") or {})
        if "type" in task:
            task["type"] = VERTEX_POOL_TASKS.get(task["type"], task["type"])
    else:
        return {}
    if "master" in cluster:
        cluster["chief"] = cluster.pop("master")
    if task.get("type") == "master":
        task["type"] = "chief"
    if "index" in task:
        task["index"] = int(task["index"])
    return {**config, "cluster": cluster, "task": task}


def export_cluster_config() -> dict:
    """Write :func:`cluster_config` to ``TF_CONFIG``, where TensorFlow reads it."""
    config = cluster_config()
    if config:
        os.environ["TF_CONFIG"] = json.dumps(config)
    return config


def _cluster_tasks() -> int:
    cluster = cluster_config().get("cluster") or {}
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def input_shard() -> tuple[int, int]:
    """(number of shards, this task's shard) of the input data.

    One shard per training task of a cluster, numbered as MultiWorkerMirroredStrategy
    numbers its workers: the chief first, then the workers in order. A task outside
    a cluster, or outside its training tasks (an evaluator), reads all of it:
    ``(1, 0)``.
    """
    config = cluster_config()
    cluster = config.get("cluster") or {}
    task = config.get("task") or {}
    count = _cluster_tasks()
    if count > 1 and task.get("type") == "chief":
        return count, 0
    if count > 1 and task.get("type") == "worker":
        return count, len(cluster.get("chief", [])) + int(task.get("index", 0))
    return 1, 0


def choose_strategy() -> tf.distribute.Strategy:
    """Picks the distribution strategy the environment asks for.

    A cluster of more than one task (what Vertex AI and Kubeflow give the replicas of
    a worker pool, see :func:`cluster_config`) means MultiWorkerMirroredStrategy,
    which uses every local GPU of every replica; several local GPUs mean
    MirroredStrategy; otherwise TensorFlow's default strategy (the single GPU, or
    the CPU), which unlike OneDeviceStrategy supports preemption checkpoints.
    """
    if _cluster_tasks() > 1:
        export_cluster_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """True on the task that writes exports and summaries (task 0 of chief or worker)."""
    config = cluster_config()
    task = config.get("task") or {}
    cluster = config.get("cluster") or {}
    if not task:
        return True
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def _files(patterns: str | Sequence[str]) -> list[str]:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p)})
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {patterns}")
    return files


def _parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    spec = {
        IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    parsed = tf.io.parse_single_example(record, spec)
    return parsed[IMAGE_KEY], parsed[LABEL_KEY]


def decoded_cache_mb(config: TrainingConfig, examples: int) -> float:
    """Memory that ``cache_decoded`` would take for ``examples`` training images.

    Counts 4:3 frames (the imagers' usual shape) at the patch scale, 3 bytes a pixel.
    """
    side = config.serving_size  # the short side training patches are cut from
    return examples * side * side * 4 / 3 * 3 / 2**20


def _use_decoded_cache(config: TrainingConfig, examples: int | None) -> bool:
    if not config.cache_decoded:
        return False
    if examples is None:
        log.warning("cache_decoded: the number of training examples is unknown; not caching")
        return False
    needed = decoded_cache_mb(config, examples)
    if needed > DECODED_CACHE_LIMIT_MB:
        log.warning(
            "cache_decoded: %d training images would take about %.0f MB decoded, above the "
            "%d MB limit; decoding every step instead", examples, needed,
            DECODED_CACHE_LIMIT_MB,
        )
        return False
    log.info("caching %d decoded training images in memory (about %.0f MB)", examples, needed)
    return True


def make_dataset(
    file_patterns: str | Sequence[str],
    config: TrainingConfig,
    global_batch: int,
    training: bool,
    examples: int | None = None,
) -> tf.data.Dataset:
    """Batches of (images scaled to [-1, 1], labels) from gzipped transformed TFRecords.

    Training data is shuffled, repeated and augmented as in the paper; evaluation
    data gets the same centre-crop preprocessing as the serving signature, at
    :attr:`TrainingConfig.serving_size`. With
    ``config.cache_decoded`` and ``examples`` (the training set's size) small enough,
    training images are decoded once (:func:`preprocessing.decode_for_training`) and
    only augmented afterwards. On a cluster each worker reads its own share of the
    examples (:func:`input_shard`).
    """
    size = config.model_config.input_size
    deterministic = config.seed is not None
    files = _files(file_patterns)
    shards, shard = input_shard()
    # Each worker of a cluster reads its own share of the data: whole files when
    # there are at least as many files as workers, otherwise every ``shards``-th
    # record of every file (a partition whatever order the files are read in).
    # tf.distribute's auto-sharding is off below: it cannot shard a pipeline that
    # numbers its examples, as seeded augmentation does.
    by_file = len(files) >= shards
    if by_file:
        files = files[shard::shards]

    def read(file: tf.Tensor) -> tf.data.Dataset:
        records = tf.data.TFRecordDataset(file, compression_type="GZIP")
        return records if by_file else records.shard(shards, shard)

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=config.seed)
    dataset = dataset.interleave(
        read,
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    dataset = dataset.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        if _use_decoded_cache(config, examples):
            dataset = dataset.map(
                lambda b, y: (
                    preprocessing.decode_for_training(b, size, config.crop_scale), y
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic,
            ).cache()

            def augment(image, seed=None):
                return preprocessing.augment_decoded(image, size, seed=seed)
        else:

            def augment(image_bytes, seed=None):
                return preprocessing.train_preprocess(
                    image_bytes, size, seed=seed, crop_scale=config.crop_scale
                )

        dataset = dataset.shuffle(config.shuffle_buffer, seed=config.seed).repeat()
        if config.seed is not None:
            # Per-example stateless seeds: the same example index gets the same crop.
            # Worker w of n numbers its examples w, w + n, w + 2n, ... so that no two
            # workers share a seed; alone, 0, 1, 2, ...
            dataset = dataset.enumerate().map(
                lambda i, xy: (
                    augment(
                        xy[0],
                        seed=tf.stack([tf.cast(config.seed, tf.int64), i * shards + shard]),
                    ),
                    xy[1],
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        else:
            dataset = dataset.map(
                lambda x, y: (augment(x), y),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=False,
            )
    else:
        serving_size = config.serving_size
        dataset = dataset.map(
            lambda b, y: (preprocessing.eval_preprocess(b, serving_size), y),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    dataset = dataset.batch(global_batch, drop_remainder=training)
    # Already sharded: the strategy only splits batches among replicas.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def count_labels(file_patterns: str | Sequence[str]) -> list[int]:
    """Examples per class in the given files (one pass over the labels)."""
    counts = [0] * NUM_CLASSES
    dataset = tf.data.TFRecordDataset(_files(file_patterns), compression_type="GZIP")
    dataset = dataset.map(
        lambda r: tf.io.parse_single_example(
            r, {LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
        )[LABEL_KEY],
        num_parallel_calls=tf.data.AUTOTUNE,
    ).batch(4096)
    for batch in dataset:
        for label, n in zip(*tf.unique_with_counts(batch)[::2], strict=True):
            counts[int(label)] += int(n)
    return counts


def class_weights_from_counts(counts: Sequence[int]) -> dict[int, float]:
    """Inverse-frequency weights, normalised so the average example weighs 1."""
    total = sum(counts)
    present = [c for c in counts if c > 0]
    return {
        i: (total / (len(present) * c)) if c > 0 else 0.0 for i, c in enumerate(counts)
    }


def learning_rate_schedule(
    config: TrainingConfig, steps_per_epoch: int, replicas: int
) -> tf.keras.optimizers.schedules.LearningRateSchedule:
    """The paper's step decay: x0.94 every 2 epochs, from a (replica-scaled) 0.045."""
    initial = config.learning_rate * (replicas if config.scale_learning_rate else 1)
    return tf.keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate=initial,
        decay_steps=max(1, int(round(config.lr_decay_epochs * steps_per_epoch))),
        decay_rate=config.lr_decay_rate,
        staircase=True,
    )


def make_optimizer(config: TrainingConfig, schedule) -> tf.keras.optimizers.Optimizer:
    """RMSProp as in the paper (or Adam), with a moving average of the weights when asked."""
    averaging = {
        "use_ema": config.ema_decay is not None,
        "ema_momentum": config.ema_decay if config.ema_decay is not None else 0.99,
    }
    if config.optimizer == "adam":
        return tf.keras.optimizers.Adam(
            learning_rate=schedule, epsilon=config.epsilon, **averaging
        )
    return tf.keras.optimizers.RMSprop(
        learning_rate=schedule,
        rho=config.rmsprop_decay,
        momentum=config.momentum,
        epsilon=config.epsilon,
        **averaging,
    )


def build_classifier(config: TrainingConfig, input_size: int | None = None) -> tf.keras.Model:
    """The network with a float32 softmax-free head, whatever the compute dtype.

    ``input_size`` replaces the model preset's (the training patch side), e.g. with
    :attr:`TrainingConfig.serving_size`.
    """
    model_config = config.model_config
    if input_size is not None and input_size != model_config.input_size:
        model_config = dataclasses.replace(model_config, input_size=input_size)
    model = build_model(model_config)
    if tf.keras.mixed_precision.global_policy().compute_dtype == "float16":
        logits = tf.keras.layers.Activation("linear", dtype="float32", name="logits_fp32")(
            model.output
        )
        model = tf.keras.Model(model.input, logits, name=model.name)
    return model


def _loss_and_metrics() -> dict:
    return {
        "loss": tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "metrics": [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    }


def at_serving_size(
    model: tf.keras.Model, config: TrainingConfig, strategy: tf.distribute.Strategy
) -> tf.keras.Model:
    """The trained network rebuilt for :attr:`TrainingConfig.serving_size` inputs.

    The same weights in a graph whose input, feature maps and final average pool fit
    the serving size; ``model`` itself when the two sizes are equal. Compiled for
    evaluation with the training loss, metrics and optimiser.
    """
    size = config.serving_size
    if size == model.input_shape[1]:
        return model
    with strategy.scope():
        resized = build_classifier(config, size)
        # By name: with frozen layers, get_weights() lists trainable weights first, an
        # order that a fresh network with every layer trainable does not share.
        freeze(resized, config.trainable_layers)
        copy_weights_by_name(model, resized, "the trained network")
        # The training optimiser comes along for its step count; evaluation and
        # export never apply it.
        optimizer = {"optimizer": model.optimizer} if model.optimizer is not None else {}
        resized.compile(**optimizer, **_loss_and_metrics())
    log.info("evaluating and exporting at %d pixels, the scale of the %d-pixel training "
             "patches (crop scale %s)", size, model.input_shape[1], config.crop_scale)
    return resized


class EpochReporter(tf.keras.callbacks.Callback):
    """Logs each finished epoch on :data:`~components.names.EPOCH_LOGGER`.

    The record carries the epoch, the number of epochs and the epoch's metrics as
    attributes (:data:`~components.names.EPOCH_ATTRIBUTE` and its neighbours), so a
    runner can follow training without reading Keras' progress text.
    """

    def __init__(self) -> None:
        super().__init__()
        self._log = logging.getLogger(names.EPOCH_LOGGER)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        logs = {key: float(value) for key, value in (logs or {}).items()}
        epochs = int(self.params.get("epochs") or 0)
        self._log.info(
            "epoch %d/%d: %s", epoch + 1, epochs,
            ", ".join(f"{key} {value:.4g}" for key, value in sorted(logs.items())),
            extra={names.EPOCH_ATTRIBUTE: epoch + 1, names.EPOCHS_ATTRIBUTE: epochs,
                   names.EPOCH_LOGS_ATTRIBUTE: logs},
        )


class _ResumeRecorder(tf.keras.callbacks.Callback):
    """Notes the step training starts from: above zero when a backup was restored.

    Placed after ``BackupAndRestore``, whose ``on_train_begin`` restores the weights
    and the optimizer's step counter.
    """

    def __init__(self) -> None:
        super().__init__()
        self.start_step = 0

    def on_train_begin(self, logs=None) -> None:
        self.start_step = int(self.model.optimizer.iterations.numpy())
        if self.start_step:
            log.info("resumed from a preemption checkpoint at step %d", self.start_step)


def train_model(
    config: TrainingConfig,
    train_files: str | Sequence[str],
    eval_files: str | Sequence[str],
    model_run_dir: str,
    train_steps: int,
    eval_steps: int | None = None,
    train_examples: int | None = None,
    backup_dir: str | None = None,
    init_from: str | None = None,
) -> tuple[tf.keras.Model, dict[str, float]]:
    """Trains; returns the model (averaged weights swapped in) and evaluation metrics.

    The returned model takes :attr:`TrainingConfig.serving_size` inputs (see
    :func:`at_serving_size`), and the metrics are measured at that size.

    The metrics also record the number of replicas and training examples used.

    Args:
        config: hyperparameters.
        train_files, eval_files: file patterns of gzipped transformed TFRecords with
            ``image_bytes`` and ``label``.
        model_run_dir: TensorBoard logs go here (the TFX ModelRun artifact).
        train_steps: optimiser steps in total; zero leaves the initial weights.
        eval_steps: evaluation batches (all of the eval data when None).
        train_examples: size of the training set, for the epoch length of the
            learning-rate schedule; counted from the data when None.
        backup_dir: where preemption checkpoints live; a rerun pointed at the same
            folder resumes from the last one (default: ``model_run_dir/backup``).
        init_from: an earlier model of the same preset (a serving folder, version
            folder or SavedModel) whose weights training starts from instead of random
            ones (:func:`components.trainer.warm_start.warm_start`). A resumed run
            restores its preemption checkpoint over them.
    """
    if tf.config.list_physical_devices("GPU"):
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    if config.seed is not None:
        tf.keras.utils.set_random_seed(config.seed)
    strategy = choose_strategy()
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    counts = count_labels(train_files) if (config.class_weights or not train_examples) else None
    if train_examples is None:
        train_examples = sum(counts)
    steps_per_epoch = max(1, math.ceil(train_examples / global_batch))
    log.info(
        "training %s on %d replica(s), global batch %d, %d examples, %d steps per epoch, "
        "%d steps", config.model, replicas, global_batch, train_examples, steps_per_epoch,
        train_steps,
    )
    # Loaded outside the strategy's scope: its variables are only read.
    init = load_init_network(init_from) if init_from else None
    with strategy.scope():
        model = build_classifier(config)
        if init is not None:
            values = copy_weights_by_name(init[0], model, f"init model {init[1]}")
            log.info("warm start: %d values from %s", values, init[1])
            del init
        trainable = freeze(model, config.trainable_layers)
        if config.trainable_layers:
            log.info("training %d of %d layers with weights (%s); the rest are frozen",
                     len(trainable), sum(1 for layer in model.layers if layer.weights),
                     config.trainable_layers)
        model.compile(
            optimizer=make_optimizer(
                config, learning_rate_schedule(config, steps_per_epoch, replicas)
            ),
            **_loss_and_metrics(),
        )
    eval_data = make_dataset(eval_files, config, global_batch, training=False)
    if train_steps > 0:
        train_data = make_dataset(
            train_files, config, global_batch, training=True, examples=train_examples
        )
        epoch_steps = min(steps_per_epoch, train_steps)
        epochs = math.ceil(train_steps / epoch_steps)
        resume = _ResumeRecorder()
        callbacks = [
            tf.keras.callbacks.BackupAndRestore(
                backup_dir or os.path.join(model_run_dir, BACKUP_DIR),
                save_freq=max(1, min(config.checkpoint_every, train_steps)),
                delete_checkpoint=True,
            ),
            resume,
            EpochReporter(),
            tf.keras.callbacks.TensorBoard(log_dir=model_run_dir, update_freq="epoch"),
        ]
        model.fit(
            train_data,
            epochs=epochs,
            steps_per_epoch=epoch_steps,
            class_weight=class_weights_from_counts(counts) if config.class_weights else None,
            callbacks=callbacks,
            verbose=2,
        )
    # fit() ends by swapping the moving average into the model's weights.
    model = at_serving_size(model, config, strategy)
    results = model.evaluate(eval_data, steps=eval_steps, return_dict=True, verbose=0)
    metrics = {k: float(v) for k, v in results.items()}
    metrics.update(replicas=float(replicas), train_examples=float(train_examples),
                   resumed_from_step=float(resume.start_step if train_steps > 0 else 0))
    return model, metrics
