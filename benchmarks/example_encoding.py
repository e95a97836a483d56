"""tf.Example encoding for ingestion: the project's codec against ``tf.train.Example``.

Ingestion's Beam workers build one tf.Example per image and parse the published MARCO
shards' records. :mod:`components.ingestion.tfexample` does both without TensorFlow;
``tf.train.Example`` needs TensorFlow imported in every worker process. Measured here:

* in this one process, on the same examples: microseconds per example to encode
  (``build_example``'s features, a 150 kB image) and to decode (a published-shard
  record), each way, after checking that both ways give the same bytes and values;
* in fresh interpreters (``--repeats``, median): the import time and resident memory
  of what an ingestion worker loads, with and without TensorFlow on top.

Run: ``.venv/bin/python benchmarks/example_encoding.py`` (about a minute).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

import components  # noqa: F401  (process set-up before TensorFlow)
from components import names
from components.ingestion import tfexample

RESULTS = Path(__file__).resolve().parent / "results" / "example_encoding.json"
ROOT = Path(__file__).resolve().parent.parent
# What an ingestion worker imports to run the Beam stages, and what tf.train.Example adds.
WORKER_IMPORTS = "import components, apache_beam; from components.ingestion import beam_stages"
TENSORFLOW_IMPORT = "import tensorflow as tf; tf.train.Example"
# Peak resident memory from /proc (VmHWM, kB): unlike ru_maxrss it does not carry the
# parent's size over from fork.
_PROBE = """
import re, time
def peak():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\\s+(\\d+)", status.read())[1])
start = time.perf_counter()
{worker}
middle = time.perf_counter()
rss = peak()
{extra}
end = time.perf_counter()
print(middle - start, end - middle, rss, peak())
"""


def example_features(index: int, image: bytes) -> dict:
    """The features ``beam_stages.build_example`` writes for one GSK image."""
    return {
        names.IMAGE_KEY: image,
        names.FORMAT_KEY: "jpeg",
        names.HEIGHT_KEY: 960,
        names.WIDTH_KEY: 1280,
        names.CHANNELS_KEY: 3,
        names.INSTITUTION_KEY: "GSK",
        names.NATIVE_LABEL_KEY: "microcrystals",
        names.IMAGE_ID_KEY: f"GSK/GSK78{index:04d}_A01_20140114-080000",
        names.SOURCE_PATH_KEY: f"/data/GSK/images/GSK78{index:04d}_A01_20140114-080000.jpg",
        names.PLATE_KEY: f"GSK78{index:04d}",
        names.WELL_KEY: "A01",
        names.IMAGED_AT_KEY: "20140114-080000",
    }


def shard_record(index: int, image: bytes) -> bytes:
    """A record of a published MARCO shard, as the ingestion workers parse them."""
    return tfexample.encode_example({
        names.MARCO_ENCODED: image, names.MARCO_SOURCE: 2, names.MARCO_RAW: 17,
        names.MARCO_LABEL: 1, names.MARCO_ID: f"GSK/{index}",
        names.MARCO_FILENAME: f"GSK78{index:04d}_A01.jpg",
    })


def tf_encode(tf, features: dict) -> bytes:
    """The same example through ``tf.train.Example``, as a replacement would build it."""
    feature = {}
    for key, value in features.items():
        if isinstance(value, int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            data = value.encode("utf-8") if isinstance(value, str) else value
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def tf_decode(tf, data: bytes) -> dict[str, list]:
    """``{key: [values]}`` of a serialised example through ``tf.train.Example``."""
    example = tf.train.Example.FromString(data)
    out = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[key] = list(getattr(feature, kind).value) if kind else []
    return out


def _per_example_us(function, items: list, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def codec_speed(count: int, image_kb: int, rounds: int) -> dict:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, image_kb * 1000, dtype=np.uint8).tobytes() for _ in range(8)]
    features = [example_features(i, images[i % len(images)]) for i in range(count)]
    records = [shard_record(i, images[i % len(images)]) for i in range(count)]
    for item in features[:8]:  # the same example either way
        assert tf.train.Example.FromString(tfexample.encode_example(item)) == \
            tf.train.Example.FromString(tf_encode(tf, item))
    for record in records[:8]:
        assert tfexample.decode_example(record) == tf_decode(tf, record)

    def both(ours, theirs, items: list) -> dict[str, float]:
        return {"tfexample": round(_per_example_us(ours, items, rounds), 1),
                "tf_train_example": round(_per_example_us(theirs, items, rounds), 1)}

    return {
        "examples": count,
        "image_kb": image_kb,
        "encode_us": both(tfexample.encode_example, lambda f: tf_encode(tf, f), features),
        "decode_us": both(tfexample.decode_example, lambda r: tf_decode(tf, r), records),
    }


def worker_imports(repeats: int) -> dict:
    """Median import seconds and resident MB of a fresh worker, without and with TF."""
    runs = []
    for _ in range(repeats):
        for extra in ("", TENSORFLOW_IMPORT):
            code = _PROBE.format(worker=WORKER_IMPORTS, extra=extra)
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True).stdout.split()
            runs.append((bool(extra), *map(float, out)))
    with_tf = [r for r in runs if r[0]]
    without = [r for r in runs if not r[0]]
    return {
        "repeats": repeats,
        "worker_import_s": round(statistics.median(r[1] for r in without), 2),
        "worker_rss_mb": round(statistics.median(r[4] for r in without) / 1024),
        "tensorflow_extra_import_s": round(statistics.median(r[2] for r in with_tf), 2),
        "tensorflow_extra_rss_mb": round(
            statistics.median(r[4] - r[3] for r in with_tf) / 1024),
    }


@click.command()
@click.option("--examples", default=2000, show_default=True, help="Examples timed each way.")
@click.option("--image-kb", default=150, show_default=True, help="Image size in each example.")
@click.option("--rounds", default=3, show_default=True, help="Timed rounds; the best counts.")
@click.option("--repeats", default=3, show_default=True, help="Fresh interpreters per import.")
@click.option("--output", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
def main(examples: int, image_kb: int, rounds: int, repeats: int, output: Path) -> None:
    """Measure both codecs in one process, and TensorFlow's import in fresh workers."""
    speed = codec_speed(examples, image_kb, rounds)
    imports = worker_imports(repeats)
    encode, decode = speed["encode_us"], speed["decode_us"]
    saved_us = encode["tfexample"] - encode["tf_train_example"]
    result = {
        "benchmark": "example_encoding",
        "cpus": os.cpu_count(),
        **speed,
        **imports,
        # Examples one worker must encode before a faster encoder repays TF's import.
        "break_even_examples_per_worker": (
            round(imports["tensorflow_extra_import_s"] * 1e6 / saved_us) if saved_us > 0
            else None
        ),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    click.echo(f"encode, us/example: tfexample {encode['tfexample']}, "
               f"tf.train.Example {encode['tf_train_example']}")
    click.echo(f"decode, us/example: tfexample {decode['tfexample']}, "
               f"tf.train.Example {decode['tf_train_example']}")
    click.echo(f"a worker: {imports['worker_import_s']} s and {imports['worker_rss_mb']} MB to "
               f"import; TensorFlow adds {imports['tensorflow_extra_import_s']} s and "
               f"{imports['tensorflow_extra_rss_mb']} MB")
    click.echo(f"break-even: {result['break_even_examples_per_worker']} examples per worker")
    click.echo(f"wrote {output}")


if __name__ == "__main__":
    main()
