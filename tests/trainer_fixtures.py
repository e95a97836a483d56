"""Small transformed-example files for trainer tests (image bytes and a 4-class label)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from components.names import IMAGE_KEY, LABEL_KEY


def drop_image(label: int, rng: np.random.Generator, size: int = 96) -> bytes:
    """A crude but learnable image per class: brightness pattern differs by label."""
    y, x = np.mgrid[0:size, 0:size]
    r = np.hypot(x - size / 2, y - size / 2) / (size / 2)
    base = 200 - 120 * (r > 0.85)
    image = np.stack([base] * 3, axis=-1).astype(np.float32)
    if label == 1:  # bright square facets
        cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
        image[cy - 6 : cy + 6, cx - 6 : cx + 6] = 255
    elif label == 3:  # granular noise
        image += rng.normal(0, 40, image.shape) * (r < 0.8)[..., None]
    elif label == 2:  # dark frame
        image *= 0.3
    image = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG" if label % 2 else "PNG")
    return buffer.getvalue()


def write_transformed(path: Path, n: int, seed: int = 0) -> list[int]:
    """Writes ``n`` examples to a gzipped TFRecord file; returns their labels."""
    rng = np.random.default_rng(seed)
    labels = [int(i % 4) for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for label in labels:
            example = tf.train.Example(features=tf.train.Features(feature={
                IMAGE_KEY: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[drop_image(label, rng)])),
                LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }))
            writer.write(example.SerializeToString())
    return labels
