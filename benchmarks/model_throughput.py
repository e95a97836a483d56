"""Training speed, FLOPs and input-pipeline speed of the MARCO model against stock Inception-v3.

Measures, on this machine's CPU:

* training throughput (images/s, one optimizer step = forward, backward, RMSProp
  update) of the paper model at 599 and of stock ``tf.keras.applications.InceptionV3``
  (4 classes) at 599 and 299, and of the small DEMO and TINY presets;
* forward FLOPs per image (counted from the layers, checked against TensorFlow's
  profiler on the frozen graph) and parameters of each;
* decode + augment throughput of the input pipeline on one core, from 1280x960 JPEGs,
  and for the demo preset also with the decoded images cached (``cache_decoded``:
  only the augmentation is redone each epoch), as a ratio to decoding every time;

and derives the accelerator time the paper's schedule (~100M training images) would
take on a current data-centre GPU, next to the paper's ~950 K80-hours (50 GPUs for 19
hours). Prints a table and writes JSON to ``benchmarks/results/model_throughput.json``.

Usage: ``python benchmarks/model_throughput.py [--steps 5] [--warmup 2] [--batch 8]``
(about 5 minutes on 2 cores).
Other processes on the machine slow every figure; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import components  # noqa: F401  (tf-keras must be selected before TensorFlow loads)

# isort: split
import tensorflow as tf
from PIL import Image
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2_as_graph,
)

from components.model import inception, preprocessing

REPO = Path(__file__).resolve().parents[1]
REAL_DROPS = REPO.parent / "shared" / "real-drops"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "model_throughput.json"

# Paper schedule and hardware (Bruno et al. 2018, "Training"): 1.7M steps of 64,
# "having processed 100M images", on 50 K80 GPUs in about 19 hours.
PAPER_TRAINING_IMAGES = 100e6
PAPER_K80_HOURS = 50 * 19
# One K80 GPU (half a K80 board): 4.37 TFLOPS fp32 at boost clock (NVIDIA datasheet).
K80_GPU_TFLOPS = 4.37
# A100 SXM dense bf16 tensor-core peak (NVIDIA datasheet).
A100_BF16_TFLOPS = 312.0
UTILISATIONS = (0.30, 0.40)
# Training costs about three forward passes (forward, plus backward for activations
# and for weights).
TRAINING_FLOPS_PER_FORWARD = 3.0


def analytic_forward_flops(model: tf.keras.Model) -> int:
    """Forward FLOPs per image of the conv and dense layers (2 per multiply-add).

    Batch norm, activations and pooling are left out: they add about 1%.
    """
    flops = 0
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            flops += 2 * kh * kw * cin * cout * height * width
        elif isinstance(layer, tf.keras.layers.Dense):
            cin, cout = layer.kernel.shape
            flops += 2 * cin * cout
    return int(flops)


def profiler_forward_flops(model: tf.keras.Model, size: int) -> int:
    """Forward FLOPs per image as TensorFlow's profiler counts them on a frozen graph."""
    forward = tf.function(lambda x: model(x, training=False), autograph=False)
    concrete = forward.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
    _, graph_def = convert_variables_to_constants_v2_as_graph(concrete)
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        profile = tf.compat.v1.profiler.profile(
            graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
        )
    return int(profile.total_float_ops)


def training_throughput(
    model: tf.keras.Model, size: int, batch: int, warmup: int, steps: int
) -> dict[str, float]:
    """Images/s of full training steps on a fixed random batch, after warm-up.

    The step is a ``tf.function`` without autograph: it has no data-dependent Python
    control flow, and autograph would spend most of a minute converting tf-keras
    internals on this version of TensorFlow (tf-keras is not on its skip list).
    """
    optimizer = tf.keras.optimizers.RMSprop(learning_rate=0.045, rho=0.9, momentum=0.9, epsilon=0.1)
    images = tf.random.uniform((batch, size, size, 3), -1.0, 1.0, seed=1)
    labels = tf.constant(np.arange(batch) % 4)

    @tf.function(autograph=False)
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
            if model.losses:
                loss += tf.add_n(model.losses)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    start = time.perf_counter()
    step(images, labels).numpy()
    first_step = time.perf_counter() - start
    for _ in range(warmup - 1):
        step(images, labels).numpy()
    start = time.perf_counter()
    for _ in range(steps):
        step(images, labels).numpy()
    elapsed = time.perf_counter() - start
    return {
        "images_per_s": batch * steps / elapsed,
        "seconds_per_step": elapsed / steps,
        "first_step_s_incl_tracing": first_step,
    }


def stock_inception(size: int) -> tf.keras.Model:
    return tf.keras.applications.InceptionV3(
        weights=None, input_shape=(size, size, 3), classes=4, classifier_activation=None
    )


def drop_jpegs(count: int = 12) -> tuple[list[bytes], str]:
    """1280x960 JPEGs: the real drop photographs if present, else PIL noise images."""
    photos = sorted(REAL_DROPS.glob("*.jpeg"))
    if photos:
        return [p.read_bytes() for p in photos], f"real drops ({len(photos)} files)"
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        # Smooth noise compresses more like a photograph than white noise does.
        small = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(small).resize((1280, 960), Image.BILINEAR).save(
            buffer, format="JPEG", quality=90
        )
        images.append(buffer.getvalue())
    return images, f"synthetic noise JPEGs ({count} files)"


def pipeline_throughput(
    jpegs: list[bytes], size: int, training: bool, crop_scale: float | None, images: int
) -> float:
    """Images/s of decode + preprocess + batch through tf.data on one thread."""
    count = len(jpegs)
    source = tf.data.Dataset.from_tensor_slices((jpegs, [0] * count)).repeat()
    dataset = preprocessing.make_dataset(
        source,
        size,
        training=training,
        batch_size=8,
        seed=0,
        crop_scale=crop_scale,
        num_parallel_calls=1,
    )
    return _one_thread_images_per_s(dataset, images, warmup_batches=2)


def _one_thread_images_per_s(dataset: tf.data.Dataset, images: int, warmup_batches: int) -> float:
    """Images/s of a dataset of batches of 8, run on one thread after some batches."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    iterator = iter(dataset.with_options(options))
    for _ in range(warmup_batches):
        next(iterator)
    batches = max(1, images // 8)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * 8 / (time.perf_counter() - start)


def cached_pipeline_throughput(
    jpegs: list[bytes], size: int, crop_scale: float, images: int
) -> float:
    """Images/s of the augmentation alone, from images decoded once and cached."""
    decoded = [preprocessing.decode_for_training(j, size, crop_scale) for j in jpegs]
    source = tf.data.Dataset.from_generator(
        lambda: iter(decoded), output_signature=tf.TensorSpec([None, None, 3], tf.uint8)
    ).cache().repeat()
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    dataset = tf.data.Dataset.zip((source, seeds)).map(
        lambda image, seed: preprocessing.augment_decoded(image, size, seed),
        num_parallel_calls=1,
    ).batch(8)
    # The first pass fills the cache and is not timed.
    return _one_thread_images_per_s(dataset, images, warmup_batches=max(2, len(jpegs) // 8 + 1))


def gpu_estimate(forward_flops: float) -> dict[str, float]:
    training_flops = PAPER_TRAINING_IMAGES * forward_flops * TRAINING_FLOPS_PER_FORWARD
    estimate: dict[str, float] = {
        "assumed_training_images": PAPER_TRAINING_IMAGES,
        "assumed_training_flops_per_forward_flop": TRAINING_FLOPS_PER_FORWARD,
        "assumed_a100_peak_tflops_bf16": A100_BF16_TFLOPS,
        "assumed_k80_gpu_peak_tflops_fp32": K80_GPU_TFLOPS,
        "paper_schedule_training_pflop": training_flops / 1e15,
    }
    for utilisation in UTILISATIONS:
        rate = A100_BF16_TFLOPS * 1e12 * utilisation
        estimate[f"a100_hours_at_{int(utilisation * 100)}pct"] = training_flops / rate / 3600
        estimate[f"a100_images_per_s_at_{int(utilisation * 100)}pct"] = rate / (
            forward_flops * TRAINING_FLOPS_PER_FORWARD
        )
    estimate["paper_k80_hours"] = PAPER_K80_HOURS
    estimate["implied_k80_utilisation"] = training_flops / (
        PAPER_K80_HOURS * 3600 * K80_GPU_TFLOPS * 1e12
    )
    return estimate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps, tracing included")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--pipeline-images", type=int, default=96)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    started = time.perf_counter()
    candidates = {
        "marco_paper_599": (lambda: inception.build_model(inception.PAPER), 599),
        "stock_inception_v3_599": (lambda: stock_inception(599), 599),
        "stock_inception_v3_299": (lambda: stock_inception(299), 299),
        # The small presets, for the laptop demo and the unit tests.
        "marco_demo_195": (lambda: inception.build_model(inception.DEMO), 195),
        "marco_tiny_75": (lambda: inception.build_model(inception.TINY), 75),
    }
    models: dict[str, dict[str, float]] = {}
    for name, (build, size) in candidates.items():
        print(f"[{time.perf_counter() - started:5.0f}s] {name}: building, counting FLOPs")
        model = build()
        entry: dict[str, float] = {
            "input_size": size,
            "parameters": model.count_params(),
            "forward_gflops_per_image": analytic_forward_flops(model) / 1e9,
            "forward_gflops_per_image_profiler": profiler_forward_flops(model, size) / 1e9,
        }
        print(f"[{time.perf_counter() - started:5.0f}s] {name}: training")
        entry.update(training_throughput(model, size, args.batch, args.warmup, args.steps))
        models[name] = entry
        del model
        tf.keras.backend.clear_session()

    jpegs, jpeg_source = drop_jpegs()
    print(f"[{time.perf_counter() - started:5.0f}s] input pipeline on {jpeg_source}")
    pipeline = {
        "source": jpeg_source,
        "train_599_native_patch": pipeline_throughput(jpegs, 599, True, None, args.pipeline_images),
        "eval_599_centre_crop": pipeline_throughput(jpegs, 599, False, None, args.pipeline_images),
        "train_195_crop_scale_1": pipeline_throughput(jpegs, 195, True, 1.0, args.pipeline_images),
        "train_195_crop_scale_1_15": pipeline_throughput(
            jpegs, 195, True, 1.15, args.pipeline_images
        ),
        "train_195_crop_scale_1_15_cached": cached_pipeline_throughput(
            jpegs, 195, 1.15, args.pipeline_images
        ),
    }

    paper = models["marco_paper_599"]
    stock = models["stock_inception_v3_599"]
    gpu = gpu_estimate(paper["forward_gflops_per_image"] * 1e9)
    a100_rate = gpu["a100_images_per_s_at_40pct"]
    ratios = {
        "paper_vs_stock_599_training_speed": paper["images_per_s"] / stock["images_per_s"],
        "paper_vs_stock_599_forward_flops": paper["forward_gflops_per_image"]
        / stock["forward_gflops_per_image"],
        "paper_vs_stock_599_parameters": paper["parameters"] / stock["parameters"],
        "pipeline_per_core_vs_paper_model_cpu_consumption": pipeline["train_599_native_patch"]
        / paper["images_per_s"],
        "cores_to_feed_one_a100_at_40pct": a100_rate / pipeline["train_599_native_patch"],
        "demo_input_cached_vs_decoding_every_step": pipeline["train_195_crop_scale_1_15_cached"]
        / pipeline["train_195_crop_scale_1_15"],
        "demo_cores_decoding_to_feed_the_model": models["marco_demo_195"]["images_per_s"]
        / pipeline["train_195_crop_scale_1_15"],
    }
    results = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "load_average_at_end": os.getloadavg(),
            "tensorflow": tf.__version__,
        },
        "settings": vars(args) | {"output": str(args.output)},
        "models": models,
        "input_pipeline_images_per_s_one_core": pipeline,
        "ratios": ratios,
        "paper_schedule_on_gpu": gpu,
        "runtime_s": time.perf_counter() - started,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_report(results)
    print(f"\nwritten to {args.output}")


def print_report(results: dict) -> None:
    print(
        f"\n{'model':26s} {'params':>10s} {'GFLOPs fwd':>11s} {'(profiler)':>10s}"
        f" {'train img/s':>12s} {'s/step':>8s}"
    )
    for name, m in results["models"].items():
        print(
            f"{name:26s} {m['parameters']:>10,d} {m['forward_gflops_per_image']:>11.2f}"
            f" {m['forward_gflops_per_image_profiler']:>10.2f} {m['images_per_s']:>12.2f}"
            f" {m['seconds_per_step']:>8.2f}"
        )
    pipeline = results["input_pipeline_images_per_s_one_core"]
    print(f"\ninput pipeline, one core, {pipeline['source']}:")
    for key, value in pipeline.items():
        if key != "source":
            print(f"  {key:34s} {value:8.1f} img/s")
    print("\nratios:")
    for key, value in results["ratios"].items():
        print(f"  {key:50s} {value:8.2f}")
    gpu = results["paper_schedule_on_gpu"]
    print(
        f"\npaper schedule (100M images, training = 3x forward FLOPs):"
        f" {gpu['paper_schedule_training_pflop']:,.0f} PFLOP"
    )
    for utilisation in UTILISATIONS:
        pct = int(utilisation * 100)
        print(
            f"  A100 bf16 {A100_BF16_TFLOPS:.0f} TFLOPS at {pct}%:"
            f" {gpu[f'a100_hours_at_{pct}pct']:.1f} GPU-hours"
            f" ({gpu[f'a100_images_per_s_at_{pct}pct']:,.0f} img/s)"
        )
    print(
        f"  paper: {gpu['paper_k80_hours']:.0f} K80-hours, i.e. an implied"
        f" {gpu['implied_k80_utilisation']:.0%} of {K80_GPU_TFLOPS} TFLOPS fp32 per K80 GPU"
    )


if __name__ == "__main__":
    main()
