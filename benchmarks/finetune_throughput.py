"""Fine-tuning throughput at 599 pixels against full training of the same preset.

Runs the Trainer's own code path (:func:`components.trainer.train.make_dataset` on
gzipped transformed TFRecords of full-size drop photographs, the ``finetune``
preset's optimiser, Keras ``fit``) twice in one process: once with the preset's
frozen layers (only ``trainable_layers`` trained) and once with every layer
trainable, and reports training images/s of each after a warm-up, so the two figures
share the machine's state. From the fine-tuning rate it derives how long the preset's
``train_steps`` take and how many epochs of a 2,000-image lab set they are.

The images are the real drop photographs of ``../shared/real-drops`` when present
(1280x960 JPEGs), else generated 1280x960 JPEGs; their content does not change the
speed. Prints a table and writes JSON to ``benchmarks/results/finetune_throughput.json``.

Usage: ``python benchmarks/finetune_throughput.py [--steps 20] [--warmup 3]``
(about 10 minutes on 2 cores). Other processes on the machine slow every figure; the
JSON records the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import components  # noqa: F401  (tf-keras must be selected before TensorFlow loads)

# isort: split
import model_throughput  # this folder's script
import tensorflow as tf

from components.names import IMAGE_KEY, LABEL_KEY
from components.trainer import train
from components.trainer.warm_start import freeze
from pipeline.config import PRESETS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "finetune_throughput.json"
LAB_IMAGES = 2000


# 1280x960 JPEGs: the real drop photographs if present, else noise images, as the
# model benchmark makes them.
drop_jpegs = model_throughput.drop_jpegs


def write_records(path: Path, jpegs: list[bytes], copies: int) -> None:
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for i in range(copies):
            for j, image in enumerate(jpegs):
                example = tf.train.Example(features=tf.train.Features(feature={
                    IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
                    LABEL_KEY: tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[(i + j) % 4])),
                }))
                writer.write(example.SerializeToString())


class _StepTimer(tf.keras.callbacks.Callback):
    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup = warmup
        self.times: list[float] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.times.append(time.perf_counter())


def throughput(config, files: str, warmup: int, steps: int) -> dict:
    """Images/s of ``steps`` Keras training steps after ``warmup`` ones."""
    tf.keras.backend.clear_session()
    model = train.build_classifier(config)
    trainable = freeze(model, config.trainable_layers)
    model.compile(
        optimizer=train.make_optimizer(config, train.learning_rate_schedule(config, 250, 1)),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = train.make_dataset(files, config, config.batch_size, training=True, examples=48)
    timer = _StepTimer(warmup)
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0)
    first = timer.times[0] - start
    elapsed = timer.times[-1] - timer.times[warmup - 1]
    return {
        "trainable_layers": config.trainable_layers,
        "layers_trained": len(trainable),
        "trainable_values": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "batch_size": config.batch_size,
        "images_per_s": config.batch_size * steps / elapsed,
        "seconds_per_step": elapsed / steps,
        "first_step_s_incl_tracing": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    preset = PRESETS["finetune"]
    finetune = preset.training
    full = dataclasses.replace(finetune, trainable_layers=None)
    jpegs, source = drop_jpegs()
    cpu_start = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        files = os.path.join(tmp, "train.gz")
        write_records(Path(files), jpegs, copies=4)
        runs = {
            "finetune": throughput(finetune, files, args.warmup, args.steps),
            "full_training": throughput(full, files, args.warmup, args.steps),
        }
    rate = runs["finetune"]["images_per_s"]
    images = preset.train_steps * finetune.batch_size
    results = {
        "benchmark": "fine-tuning against full training, paper network at 599 px",
        "images": source,
        "input_size": finetune.model_config.input_size,
        "steps_measured": args.steps,
        "warmup_steps": args.warmup,
        "runs": runs,
        "speedup_finetune_over_full": rate / runs["full_training"]["images_per_s"],
        "preset_train_steps": preset.train_steps,
        "preset_training_images": images,
        "preset_training_minutes_at_measured_rate": images / rate / 60,
        "epochs_of_a_lab_set": {"lab_images": LAB_IMAGES, "epochs": images / LAB_IMAGES},
        "process_cpu_seconds": time.process_time() - cpu_start,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "load_average_at_end": os.getloadavg(),
        },
    }
    print(f"{'run':<15}{'layers':>8}{'trainable values':>18}{'images/s':>10}{'s/step':>8}")
    for name, run in runs.items():
        print(f"{name:<15}{run['layers_trained']:>8}{run['trainable_values']:>18,}"
              f"{run['images_per_s']:>10.2f}{run['seconds_per_step']:>8.2f}")
    print(f"fine-tuning is {results['speedup_finetune_over_full']:.2f}x full training; "
          f"the preset's {preset.train_steps} steps of {finetune.batch_size} take about "
          f"{results['preset_training_minutes_at_measured_rate']:.0f} min "
          f"({images / LAB_IMAGES:.1f} epochs of {LAB_IMAGES} images)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
