"""A pushed tiny model and a folder of drop images with planted bad files, for scoring tests.

The export takes about half a minute, so it is made once per test session whichever
test module asks for it first.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from components.names import (
    BYTES_INPUT,
    PROBABILITIES_OUTPUT,
    PROBABILITIES_SIGNATURE,
    SERVING_DEFAULT,
)
from tests.trainer_fixtures import drop_image

VERSION = 3
# name -> (plate, well) the default pattern must read from it.
GOOD_IMAGES = {
    "PLATE01/PLATE01_A01_20240101-0800.jpg": ("PLATE01", "A01"),
    "PLATE01/PLATE01_A02_20240101-0800.png": ("PLATE01", "A02"),
    "PLATE01/PLATE01_H12_20240101-0800.JPG": ("PLATE01", "H12"),
    "PLATE02/B07_1.jpeg": ("PLATE02", "B07"),
    "PLATE02/C11_2.png": ("PLATE02", "C11"),
    "20240102-0900/PLATE03_D04.jpg": ("PLATE03", "D04"),
    "loose/drop-shot-1.png": ("", ""),
    "loose/drop-shot-2.jpg": ("", ""),
}
GOOD_IMAGES.update({f"PLATE04/deeper/PLATE04_E{i:02d}_x.jpg": ("PLATE04", f"E{i:02d}")
                    for i in range(1, 13)})
# Files with image names that are not usable images: each must get an error row.
BAD_IMAGES = {
    "PLATE05/PLATE05_A01_empty.jpg": "empty file",
    "PLATE05/PLATE05_A02_truncated.jpg": "JPEG",
    "PLATE05/PLATE05_A03_notes.png": "image file format",
    "PLATE05/PLATE05_A04_gone.jpg": "cannot read",
}
NOT_IMAGES = ("README.txt", "PLATE01/plate.xml")


@functools.cache
def _export_tiny(base: str) -> Path:
    from components.model import inception
    from components.trainer.export import export_model

    serving = Path(base) / "serving"
    model = inception.build_model(inception.TINY)
    export_model(model, str(serving / str(VERSION)))
    # An older version, and a version folder still being written, which must be passed
    # over for the newest complete one.
    (serving / "1").mkdir()
    (serving / "1" / "saved_model.pb").write_bytes(b"")
    (serving / "17").mkdir()
    return serving


@pytest.fixture(scope="session")
def serving_dir(tmp_path_factory) -> Path:
    """A serving folder in the Pusher's layout; the tiny model is version 3."""
    return _export_tiny(str(tmp_path_factory.getbasetemp()))


@functools.cache
def _tf2_load(model_dir: str):
    import tensorflow as tf

    return tf.saved_model.load(model_dir)


def tf2_loaded(model_dir: Path):
    """The SavedModel loaded by TensorFlow 2's own loader (once per session)."""
    return _tf2_load(str(model_dir))


def direct_probabilities(model_dir: Path, images: list[bytes]) -> np.ndarray:
    """The ``probabilities`` signature called through TensorFlow 2's own loader."""
    import tensorflow as tf

    signatures = tf2_loaded(model_dir).signatures
    outputs = signatures[PROBABILITIES_SIGNATURE](**{BYTES_INPUT: tf.constant(images)})
    return outputs[PROBABILITIES_OUTPUT].numpy()


def direct_serving(model_dir: Path, images: list[bytes]) -> dict[str, np.ndarray]:
    """The ``serving_default`` signature called through TensorFlow 2's own loader."""
    import tensorflow as tf

    signatures = tf2_loaded(model_dir).signatures
    outputs = signatures[SERVING_DEFAULT](**{BYTES_INPUT: tf.constant(images)})
    return {k: v.numpy() for k, v in outputs.items()}


def write_drop_folder(root: Path, seed: int = 0) -> dict[str, Path]:
    """Writes GOOD_IMAGES, BAD_IMAGES and NOT_IMAGES under ``root``; returns name -> path."""
    rng = np.random.default_rng(seed)
    paths = {}
    for index, name in enumerate(GOOD_IMAGES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = drop_image(index % 4, rng)
        # drop_image picks JPEG or PNG by class; write what the name says.
        from io import BytesIO

        from PIL import Image

        image = Image.open(BytesIO(data)).convert("RGB")
        image = image.resize((96 + 8 * (index % 3), 96))  # a few non-square ones too
        buffer = BytesIO()
        image.save(buffer, format="PNG" if name.lower().endswith(".png") else "JPEG")
        path.write_bytes(buffer.getvalue())
        paths[name] = path
    good_jpeg = paths["PLATE01/PLATE01_A01_20240101-0800.jpg"].read_bytes()
    contents = {
        "PLATE05/PLATE05_A01_empty.jpg": b"",
        "PLATE05/PLATE05_A02_truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "PLATE05/PLATE05_A03_notes.png": b"plate notes, not an image\n",
    }
    for name, data in contents.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths[name] = path
    gone = root / "PLATE05/PLATE05_A04_gone.jpg"
    os.symlink(root / "PLATE05" / "deleted-since.jpg", gone)  # a dangling link
    paths["PLATE05/PLATE05_A04_gone.jpg"] = gone
    for name in NOT_IMAGES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("not an image\n")
    return paths
