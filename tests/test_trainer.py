"""Training: the paper's optimiser and schedule, resume after preemption, two workers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.model import preprocessing
from components.names import SERVING_CLASS_NAMES
from components.trainer import METRICS_FILE
from components.trainer import config as trainer_config
from components.trainer import train as train_module
from components.trainer.export import export_model, input_side
from components.trainer.train import (
    at_serving_size,
    build_classifier,
    class_weights_from_counts,
    count_labels,
    decoded_cache_mb,
    learning_rate_schedule,
    make_dataset,
    make_optimizer,
    train_model,
)
from tests.trainer_fixtures import drop_image, write_transformed

TINY = trainer_config.TINY


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("transformed")
    write_transformed(folder / "train-00000.gz", 48, seed=1)
    write_transformed(folder / "eval-00000.gz", 16, seed=2)
    return folder


def test_paper_optimiser_and_schedule():
    paper = trainer_config.PAPER
    assert (paper.batch_size, paper.learning_rate, paper.model) == (64, 0.045, "paper")
    optimizer = make_optimizer(paper, learning_rate_schedule(paper, 100, 1))
    cfg = optimizer.get_config()
    assert (cfg["rho"], cfg["momentum"], cfg["epsilon"]) == (0.9, 0.9, 0.1)
    assert cfg["use_ema"] and cfg["ema_momentum"] == 0.9999
    schedule = learning_rate_schedule(paper, steps_per_epoch=100, replicas=1)
    # x0.94 every 2 epochs (200 steps), as a staircase.
    assert float(schedule(199)) == pytest.approx(0.045)
    assert float(schedule(200)) == pytest.approx(0.045 * 0.94)
    assert float(schedule(1000)) == pytest.approx(0.045 * 0.94**5)
    # With 8 replicas the global batch is 8x larger: the rate scales with it.
    assert float(learning_rate_schedule(paper, 100, 8)(0)) == pytest.approx(0.36)


def test_demo_trains_with_adam_and_unknown_optimisers_are_refused():
    demo = trainer_config.DEMO
    optimizer = make_optimizer(demo, learning_rate_schedule(demo, 40, 1))
    assert isinstance(optimizer, tf.keras.optimizers.Adam)
    cfg = optimizer.get_config()
    assert cfg["epsilon"] == demo.epsilon and cfg["ema_momentum"] == demo.ema_decay
    assert float(optimizer.learning_rate) == pytest.approx(0.002)
    restored = trainer_config.TrainingConfig.from_json_dict(demo.to_json_dict())
    assert restored.optimizer == "adam"
    with pytest.raises(ValueError, match="optimizer 'sgd' is unknown"):
        dataclasses.replace(demo, optimizer="sgd")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("class_weights", "false", "'class_weights' must be bool, got 'false'"),
        ("batch_size", "64", "'batch_size' must be int, got '64'"),
        ("batch_size", True, "'batch_size' must be int, got True"),
        ("cache_decoded", 1, "'cache_decoded' must be bool, got 1"),
        ("learning_rate", None, "'learning_rate' must be float or int, got None"),
        ("crop_scale", "1.15", "'crop_scale' must be float or int or null, got '1.15'"),
    ],
)
def test_training_settings_from_json_must_have_their_fields_types(name, value, message):
    settings = trainer_config.DEMO.to_json_dict()
    settings[name] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        trainer_config.TrainingConfig.from_json_dict(settings)


@pytest.mark.parametrize("settings", [["batch_size", 64], "batch_size=64", None])
def test_training_settings_from_json_must_be_an_object(settings):
    with pytest.raises(ValueError, match="training settings must be a JSON object"):
        trainer_config.TrainingConfig.from_json_dict(settings)


def test_training_settings_from_json_accept_integers_for_floats_and_null_for_options():
    settings = {"learning_rate": 1, "ema_decay": None, "crop_scale": 2, "seed": 3}
    restored = trainer_config.TrainingConfig.from_json_dict(settings)
    assert restored.learning_rate == 1 and restored.ema_decay is None
    assert restored.crop_scale == 2 and restored.seed == 3


def test_class_weights_counts_and_inverse_frequency(data):
    counts = count_labels(str(data / "train*.gz"))
    assert counts == [12, 12, 12, 12]
    weights = class_weights_from_counts([100, 25, 6, 400])
    assert weights[2] > weights[1] > weights[0] > weights[3]
    total = sum(w * c for w, c in zip(weights.values(), [100, 25, 6, 400], strict=True))
    assert total == pytest.approx(531)


@pytest.mark.slow
def test_training_learns_and_export_answers(data, tmp_path):
    config = dataclasses.replace(TINY, learning_rate=0.005, ema_decay=0.9)
    _, before = train_model(config, str(data / "train*"), str(data / "eval*"),
                            str(tmp_path / "run0"), train_steps=0)
    model, after = train_model(config, str(data / "train*"), str(data / "eval*"),
                               str(tmp_path / "run"), train_steps=36)
    assert after["loss"] < before["loss"]
    # TensorBoard logs land in the model run directory.
    assert any("events.out.tfevents" in f for _, _, fs in os.walk(tmp_path / "run") for f in fs)
    export_dir = tmp_path / "export"
    export_model(model, str(export_dir))
    loaded = tf.saved_model.load(str(export_dir))
    rng = np.random.default_rng(3)
    images = tf.constant([drop_image(label, rng) for label in range(4)])
    served = loaded.signatures["serving_default"](image_bytes=images)
    probabilities = loaded.signatures["probabilities"](image_bytes=images)["probabilities"]
    scores = served["scores"].numpy()
    assert served["classes"].shape == (4, 4) and scores.shape == (4, 4)
    assert np.all(np.diff(scores, axis=1) <= 0), "scores sorted, highest first"
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)
    # The sorted classes and scores are the fixed-order probabilities rearranged.
    for row in range(4):
        for name, score in zip(served["classes"].numpy()[row], scores[row], strict=True):
            index = SERVING_CLASS_NAMES.index(name.decode())
            assert probabilities.numpy()[row, index] == pytest.approx(score, rel=1e-5)
    # Malformed bytes: a clear error, and the model keeps answering afterwards.
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)image"):
        loaded.signatures["serving_default"](image_bytes=tf.constant([b"not an image"]))
    assert loaded.signatures["serving_default"](image_bytes=images[:1])["scores"].shape == (1, 4)


def test_serving_size_is_the_scale_training_patches_were_cut_at():
    assert trainer_config.PAPER.serving_size == 599  # native patches: the released size
    assert trainer_config.DEMO.serving_size == 224  # 195 x 1.15
    assert TINY.serving_size == 86  # 75 x 1.15
    assert dataclasses.replace(TINY, crop_scale=1.0).serving_size == 75


@pytest.mark.slow
def test_model_is_evaluated_and_exported_at_the_serving_size(data, tmp_path):
    strategy = tf.distribute.get_strategy()
    trained = build_classifier(TINY)
    assert input_side(trained) == 75
    resized = at_serving_size(trained, TINY, strategy)
    assert input_side(resized) == 86
    for before, after in zip(trained.get_weights(), resized.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    native = dataclasses.replace(TINY, crop_scale=None, cache_decoded=False)
    assert at_serving_size(trained, native, strategy) is trained

    model, metrics = train_model(TINY, str(data / "train*"), str(data / "eval*"),
                                 str(tmp_path / "run"), train_steps=2)
    assert input_side(model) == 86 and "accuracy" in metrics
    eval_images, _ = next(iter(make_dataset(str(data / "eval*"), TINY, 4, training=False)))
    assert eval_images.shape[1:] == (86, 86, 3)
    # The exported signatures resize each photograph to the same 86 pixels.
    export_model(model, str(tmp_path / "export"))
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    image = drop_image(1, np.random.default_rng(5))
    served = loaded.signatures["probabilities"](image_bytes=tf.constant([image]))
    direct = tf.nn.softmax(model(preprocessing.eval_preprocess(tf.constant(image), 86)[None]))
    np.testing.assert_allclose(served["probabilities"].numpy(), direct.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="fixed square input"):
        input_side(tf.keras.Sequential([tf.keras.layers.InputLayer((None, None, 3))]))


class _Preempt(tf.keras.callbacks.Callback):
    """Interrupts training at the end of its ``at_step``-th step, noting the step count."""

    def __init__(self, at_step: int):
        super().__init__()
        self.at_step = at_step
        self.seen = 0
        self.stopped_at: int | None = None

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at_step:
            self.stopped_at = int(self.model.optimizer.iterations.numpy())
            raise KeyboardInterrupt("preempted")


class _StepProbe(tf.keras.callbacks.Callback):
    """Records the optimizer's step when training starts and counts the steps run."""

    def __init__(self):
        super().__init__()
        self.started_at: int | None = None
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.started_at = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


@pytest.mark.slow
def test_resume_after_preemption(data, tmp_path, monkeypatch):
    backup = tmp_path / "backup"
    original_fit = tf.keras.Model.fit
    config = dataclasses.replace(TINY, checkpoint_every=3)
    preempt = _Preempt(7)
    first = _StepProbe()

    def fit_with_preemption(self, *args, callbacks=None, **kwargs):
        return original_fit(self, *args, callbacks=[*callbacks, first, preempt], **kwargs)

    monkeypatch.setattr(tf.keras.Model, "fit", fit_with_preemption)
    with pytest.raises(KeyboardInterrupt):
        train_model(config, str(data / "train*"), str(data / "eval*"), str(tmp_path / "r1"),
                    train_steps=12, backup_dir=str(backup))
    assert (first.started_at, preempt.stopped_at) == (0, 7)
    assert backup.exists(), "a preemption checkpoint was written"

    # Checkpoints every 3 steps: the last one before the interruption is at step 6.
    last_checkpoint = preempt.stopped_at // 3 * 3
    second = _StepProbe()

    def fit_with_probe(self, *args, callbacks=None, **kwargs):
        # After BackupAndRestore, whose on_train_begin restores the backup.
        return original_fit(self, *args, callbacks=[*callbacks, second], **kwargs)

    monkeypatch.setattr(tf.keras.Model, "fit", fit_with_probe)
    model, metrics = train_model(config, str(data / "train*"), str(data / "eval*"),
                                 str(tmp_path / "r2"), train_steps=12, backup_dir=str(backup))
    assert second.started_at == last_checkpoint == 6
    assert metrics["resumed_from_step"] == last_checkpoint
    # Only the remaining steps ran, and the step count went on from the checkpoint.
    assert second.steps == 12 - last_checkpoint
    assert int(model.optimizer.iterations.numpy()) == 12
    assert not backup.exists() or not any(backup.iterdir()), "backup removed on completion"


def _worker_config(monkeypatch, index: int | None, workers: int = 2) -> None:
    """Sets TF_CONFIG for worker ``index`` of a cluster (none when ``index`` is None)."""
    monkeypatch.delenv("CLUSTER_SPEC", raising=False)
    if index is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
        return
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": [f"w-{i}:2222" for i in range(workers)]},
        "task": {"type": "worker", "index": index},
    }))


def _example_keys(dataset: tf.data.Dataset) -> list[str]:
    """One key per evaluation example: a digest of its preprocessed image."""
    return [
        hashlib.sha256(image.tobytes()).hexdigest()[:12]
        for images, _ in dataset.as_numpy_iterator()
        for image in images
    ]


@pytest.mark.parametrize("files", [3, 1])
def test_workers_read_disjoint_shares_that_cover_the_data(tmp_path, monkeypatch, files):
    """Whole files per worker when there are enough of them, else every other record."""
    for i in range(files):
        write_transformed(tmp_path / f"eval-{i:05d}.gz", 12 // files, seed=20 + i)
    pattern = str(tmp_path / "eval*")
    _worker_config(monkeypatch, None)
    everything = _example_keys(make_dataset(pattern, TINY, 4, training=False))
    shares = []
    for index in range(2):
        _worker_config(monkeypatch, index)
        assert train_module.input_shard() == (2, index)
        shares.append(_example_keys(make_dataset(pattern, TINY, 4, training=False)))
    assert len(set(everything)) == 12
    assert all(shares), "every worker has examples"
    assert len(set(shares[0]) & set(shares[1])) == 0, "no example is read by both workers"
    assert sorted(shares[0] + shares[1]) == sorted(everything)
    # Seeded training pipelines build on every worker, with the auto-sharding that
    # cannot handle their example numbering turned off.
    train = make_dataset(pattern, TINY, 4, training=True, examples=12)
    assert (train.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.OFF)
    assert next(iter(train))[0].shape[0] == 4


def test_the_chief_and_then_the_workers_take_the_input_shards(monkeypatch):
    cluster = {"chief": ["c:1"], "worker": ["w-0:1", "w-1:1"], "evaluator": ["e:1"]}
    for task, expected in [("chief", 0), ("worker", 1)]:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                    "task": {"type": task, "index": 0}}))
        assert train_module.input_shard() == (3, expected)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "worker", "index": 1}}))
    assert train_module.input_shard() == (3, 2)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "evaluator", "index": 0}}))
    assert train_module.input_shard() == (1, 0)


@pytest.mark.slow
def test_two_seeded_workers_train_on_several_files_and_export(tmp_path):
    """Two MultiWorkerMirroredStrategy processes: seeded, 3 files, then run_fn's export."""
    import portpicker

    data = tmp_path / "data"
    for i in range(3):
        write_transformed(data / f"train-{i:05d}.gz", 16, seed=10 + i)
    write_transformed(data / "eval-00000.gz", 8, seed=2)
    config = dataclasses.replace(TINY, seed=11)
    out = tmp_path / "out"
    out.mkdir()
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    worker = Path(__file__).with_name("multiworker_worker.py")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.pop("CLUSTER_SPEC", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(i), ",".join(map(str, ports)), str(data),
             str(out), json.dumps(config.to_json_dict())],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, output in zip(procs, outputs, strict=True):
        assert p.returncode == 0, output[-3000:]
    for i in range(2):
        metrics = json.loads((out / f"metrics{i}.json").read_text())
        assert metrics["replicas"] == 2.0, "both workers joined one MultiWorkerMirroredStrategy"
    first = np.load(out / "weights0.npz")
    second = np.load(out / "weights1.npz")
    assert len(first.files) == len(second.files) > 10
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])

    # The chief's export and metrics.
    assert json.loads((out / "run" / METRICS_FILE).read_text())["replicas"] == 2.0
    loaded = tf.saved_model.load(str(out / "serving"))
    rng = np.random.default_rng(3)
    images = tf.constant([drop_image(label, rng) for label in range(4)])
    served = loaded.signatures["serving_default"](image_bytes=images)
    probabilities = loaded.signatures["probabilities"](image_bytes=images)["probabilities"]
    probabilities = probabilities.numpy()
    assert probabilities.shape == (4, 4) and np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert served["classes"].shape == (4, 4)
    np.testing.assert_allclose(served["scores"].numpy(), -np.sort(-probabilities, axis=1),
                               rtol=1e-5)
    # It answers with the trained weights.
    trained = build_classifier(config, config.serving_size)
    trained.set_weights([first[f"arr_{i}"] for i in range(len(first.files))])
    size = config.serving_size
    direct = tf.nn.softmax(trained(tf.stack(
        [preprocessing.eval_preprocess(image, size) for image in images])))
    np.testing.assert_allclose(probabilities, direct.numpy(), atol=1e-5)


def test_decoded_cache_is_read_once_and_augmented_every_epoch(tmp_path, caplog):
    """With ``cache_decoded`` later epochs come from memory, with fresh random patches.

    The file is deleted after the first epochs: the cached pipeline goes on, the
    streaming one fails when it reopens the file, which shows the test tells them apart.
    """
    files = tmp_path / "train-00000.gz"
    write_transformed(files, 1, seed=4)
    cached = dataclasses.replace(TINY, cache_decoded=True, shuffle_buffer=1)
    streaming = dataclasses.replace(cached, cache_decoded=False)
    size = TINY.model_config.input_size
    with caplog.at_level("INFO"):
        cached_batches = iter(make_dataset(str(files), cached, 4, training=True, examples=1))
    assert "caching 1 decoded training images" in caplog.text
    streamed_batches = iter(make_dataset(str(files), streaming, 4, training=True, examples=1))
    before = [next(cached_batches)[0].numpy() for _ in range(2)]
    next(streamed_batches)
    files.unlink()
    after = [next(cached_batches)[0].numpy() for _ in range(20)]
    for batch in before + after:
        assert batch.shape == (4, size, size, 3)
        # One image, four epochs per batch: the patches differ, so augmentation runs
        # after the cache, not once before it.
        assert all(not np.array_equal(batch[0], other) for other in batch[1:])
    with pytest.raises(tf.errors.NotFoundError, match="train-00000"):
        for _ in range(50):
            next(streamed_batches)


def test_decoded_cache_needs_a_crop_scale_and_is_skipped_when_too_large(
    data, monkeypatch, caplog
):
    with pytest.raises(ValueError, match="cache_decoded needs crop_scale"):
        dataclasses.replace(TINY, cache_decoded=True, crop_scale=None)
    demo = trainer_config.DEMO
    # 224-pixel short side (195 x 1.15), 4:3 frames, 3 bytes a pixel.
    assert decoded_cache_mb(demo, 1000) == pytest.approx(1000 * 224 * 299 * 3 / 2**20, rel=0.01)
    monkeypatch.setattr(train_module, "DECODED_CACHE_LIMIT_MB", 0.01)
    config = dataclasses.replace(TINY, cache_decoded=True)
    with caplog.at_level("WARNING"):
        batch = next(iter(make_dataset(str(data / "train*"), config, 4, training=True,
                                       examples=48)))
    assert "above the 0 MB limit; decoding every step instead" in caplog.text
    assert batch[0].shape[0] == 4
