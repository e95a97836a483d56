"""Decoding, evaluation crop and training augmentation on synthetic and real drop images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import components  # noqa: F401  (tf-keras must be selected before TensorFlow loads)

# isort: split
import tensorflow as tf

from components.model import preprocessing as pp

REAL_DROPS = Path(__file__).resolve().parents[2] / "shared" / "real-drops"


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


def noise_jpeg(height: int, width: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "JPEG")


def quadrants(size: int) -> np.ndarray:
    """Greyscale image, one flat level per quadrant: TL 0.8, TR 0.6, BL 0.4, BR 0.2."""
    half = size // 2
    image = np.empty((size, size), np.uint8)
    image[:half, :half], image[:half, half:] = 204, 153
    image[half:, :half], image[half:, half:] = 102, 51
    return image


def coordinates(height: int, width: int) -> tf.Tensor:
    """Float image whose red channel is the column and green the row, both in [0, 1]."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([cols / (width - 1), rows / (height - 1), np.zeros_like(rows)], axis=-1)
    return tf.constant(image, tf.float32)


# Decoding


def test_decode_rgb_jpeg_to_float_rgb() -> None:
    image = pp.decode_image(noise_jpeg(30, 40))
    assert image.shape == (30, 40, 3)
    assert image.dtype == tf.float32
    assert float(tf.reduce_min(image)) >= 0.0 and float(tf.reduce_max(image)) <= 1.0


def test_decode_greyscale_png_and_jpeg_repeat_the_channel() -> None:
    grey = np.full((6, 5), 128, np.uint8)
    for data in (encode(grey, "PNG"), encode(grey, "JPEG")):
        image = pp.decode_image(data).numpy()
        assert image.shape == (6, 5, 3)
        np.testing.assert_allclose(image, 128 / 255, atol=2 / 255)


def test_decode_rgba_png_drops_alpha_keeps_colour() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 2], rgba[..., 3] = 255, 51, 0  # fully transparent
    image = pp.decode_image(encode(rgba, "PNG")).numpy()
    assert image.shape == (4, 4, 3)
    np.testing.assert_allclose(image[0, 0], [1.0, 0.0, 0.2], atol=1e-6)


def test_decode_greyscale_alpha_png() -> None:
    la = np.zeros((3, 3, 2), np.uint8)
    la[..., 0], la[..., 1] = 77, 9
    image = pp.decode_image(encode(la, "PNG", mode="LA")).numpy()
    np.testing.assert_allclose(image, 77 / 255, atol=1e-6)


def test_decode_16_bit_png_keeps_precision() -> None:
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000).astype(np.uint16)
    image = pp.decode_image(encode(grey16, "PNG")).numpy()
    assert image.shape == (3, 4, 3)
    # 1000 / 65535 would be 0 or 4/255 after an 8-bit round trip.
    np.testing.assert_allclose(image[..., 1], grey16 / 65535, atol=1e-6)
    rgb16 = tf.io.encode_png(tf.constant(np.full((2, 2, 3), 300, np.uint16)))
    np.testing.assert_allclose(pp.decode_image(rgb16).numpy(), 300 / 65535, atol=1e-7)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_eval_white_is_one_whatever_the_format(fmt: str) -> None:
    """8-bit white maps to exactly +1 whichever decoder reads it."""
    white = np.full((8, 8, 3), 255, np.uint8)
    image = pp.eval_preprocess(encode(white, fmt), 4).numpy()
    np.testing.assert_allclose(image, 1.0, atol=1e-6)


def test_eval_keeps_16_bit_precision() -> None:
    level = np.full((8, 8), 1000, np.uint16)
    image = pp.eval_preprocess(encode(level, "PNG"), 4).numpy()
    np.testing.assert_allclose(image, 2 * 1000 / 65535 - 1, atol=1e-6)


# Evaluation


@pytest.mark.parametrize(("height", "width"), [(60, 100), (100, 60), (60, 61)])
def test_eval_crops_the_central_square(height: int, width: int) -> None:
    """Margins are red, the centred square green: only green may come out."""
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = 255
    image[top : top + side, left : left + side] = (0, 255, 0)
    out = pp.eval_preprocess(encode(image, "PNG"), 32).numpy()
    assert out.shape == (32, 32, 3)
    np.testing.assert_allclose(out[..., 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(out[..., 1], 1.0, atol=1e-6)


def test_eval_resizes_whole_square_bilinearly() -> None:
    """The output spans the whole square: left column dark, right column bright."""
    ramp = np.tile(np.linspace(0, 255, 90).astype(np.uint8), (90, 1))
    out = pp.eval_preprocess(encode(ramp, "PNG"), 30).numpy()[..., 0]
    assert out[:, 0].max() < -0.9
    assert out[:, -1].min() > 0.9
    assert np.all(np.diff(out, axis=1) >= 0)


def test_eval_runs_in_a_serving_style_graph() -> None:
    """As in a serving signature: a batch of encoded images of any size and format."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(image_bytes: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(
            lambda b: pp.eval_preprocess(b, 48),
            image_bytes,
            fn_output_signature=tf.TensorSpec([48, 48, 3], tf.float32),
        )

    batch = tf.constant(
        [
            noise_jpeg(96, 128),
            encode(np.zeros((50, 40), np.uint16), "PNG"),
            encode(np.zeros((20, 70, 4), np.uint8), "PNG"),
        ]
    )
    out = serve(batch).numpy()
    assert out.shape == (3, 48, 48, 3)
    assert out.min() >= -1.0 and out.max() <= 1.0


# Training


def test_train_output_shape_and_range_over_many_seeds() -> None:
    data = noise_jpeg(120, 160)
    for seed in range(20):
        out = pp.train_preprocess(data, 64, seed=seed).numpy()
        assert out.shape == (64, 64, 3)
        assert out.min() >= -1.0 and out.max() <= 1.0


def test_train_is_deterministic_with_a_seed_and_varies_across_seeds() -> None:
    data = noise_jpeg(120, 160)
    first = pp.train_preprocess(data, 64, seed=7).numpy()
    np.testing.assert_array_equal(first, pp.train_preprocess(data, 64, seed=7).numpy())
    np.testing.assert_array_equal(
        first, pp.train_preprocess(data, 64, seed=tf.constant([7, 0])).numpy()
    )
    assert not np.array_equal(first, pp.train_preprocess(data, 64, seed=8).numpy())
    unseeded = [pp.train_preprocess(data, 64).numpy() for _ in range(2)]
    assert not np.array_equal(*unseeded)


def test_train_flips_both_ways_about_half_the_time() -> None:
    """Quadrant levels survive the colour distortions in order, so they reveal flips.

    On grey, hue and saturation change nothing and brightness and contrast are
    increasing maps, so the brightest quadrant is where the top-left one went.
    """
    size = 32
    data = encode(quadrants(size), "PNG")
    seen = []
    for seed in range(40):
        out = pp.train_preprocess(data, size, seed=seed).numpy()[..., 0]
        half = size // 2
        means = {
            (False, False): out[:half, :half].mean(),
            (False, True): out[:half, half:].mean(),
            (True, False): out[half:, :half].mean(),
            (True, True): out[half:, half:].mean(),
        }
        up_down, left_right = max(means, key=means.get)
        seen.append((up_down, left_right))
    left_right_count = sum(lr for _, lr in seen)
    up_down_count = sum(ud for ud, _ in seen)
    assert 8 <= left_right_count <= 32
    assert 8 <= up_down_count <= 32
    assert len(set(seen)) == 4


def test_decode_for_training_rescales_once_to_the_patch_scale() -> None:
    """Short side at size x crop_scale, aspect kept, 8-bit, whatever the file's depth."""
    image = pp.decode_for_training(noise_jpeg(120, 160), 64, 1.15)
    assert image.dtype == tf.uint8 and tuple(image.shape) == (74, 99, 3)
    deep = np.linspace(0, 65535, 90 * 60).reshape(90, 60).astype(np.uint16)
    tall = pp.decode_for_training(encode(deep, "PNG"), 32, 1.0).numpy()
    assert tall.shape == (48, 32, 3)
    assert tall[0, 0, 0] < 10 and tall[-1, -1, 0] > 245  # 16 bits read as full range
    assert pp.training_scale_side(195, 1.15) == 224
    with pytest.raises(ValueError, match="crop_scale must be at least 1"):
        pp.training_scale_side(64, 0.9)


def test_cached_augmentation_matches_decoding_each_time() -> None:
    """With one possible window (a square image, crop_scale 1) both routes agree.

    Same seed, so the same flips and colour distortion; they differ only by the 8-bit
    rounding of the cached copy.
    """
    smooth = np.stack(np.meshgrid(np.linspace(0, 255, 160), np.linspace(40, 200, 160)), -1)
    data = encode(np.concatenate([smooth, smooth[..., :1]], -1).astype(np.uint8), "PNG")
    for seed in range(5):
        direct = pp.train_preprocess(data, 64, seed=seed, crop_scale=1.0).numpy()
        cached = pp.augment_decoded(pp.decode_for_training(data, 64, 1.0), 64, seed=seed)
        np.testing.assert_allclose(cached.numpy(), direct, atol=0.02)
    assert not np.allclose(
        pp.augment_decoded(pp.decode_for_training(data, 64, 1.0), 64, seed=1).numpy(),
        pp.augment_decoded(pp.decode_for_training(data, 64, 1.0), 64, seed=2).numpy(),
    )


def test_train_colour_distortion_changes_colour() -> None:
    """Some seeds shift the mean colour by more than a JPEG round trip could."""
    flat = np.full((64, 64, 3), (120, 140, 100), np.uint8)
    data = encode(flat, "PNG")
    reference = pp.eval_preprocess(data, 32).numpy().mean(axis=(0, 1))
    shifts = [
        np.abs(pp.train_preprocess(data, 32, seed=s).numpy().mean(axis=(0, 1)) - reference).max()
        for s in range(10)
    ]
    assert max(shifts) > 0.1


def test_random_patch_at_native_resolution_is_a_slice() -> None:
    image = coordinates(96, 128)
    offsets = set()
    for seed in range(10):
        patch = pp.random_patch(image, 32, seed).numpy()
        top = round(patch[0, 0, 1] * 95)
        left = round(patch[0, 0, 0] * 127)
        np.testing.assert_allclose(
            patch, image[top : top + 32, left : left + 32].numpy(), atol=1e-6
        )
        offsets.add((top, left))
    assert len(offsets) > 5


def test_random_patch_with_crop_scale_one_spans_the_short_side() -> None:
    patch = pp.random_patch(coordinates(96, 128), 32, seed=3, crop_scale=1.0).numpy()
    rows = patch[:, 0, 1]
    assert rows[0] < 3 / 95 and rows[-1] > 92 / 95


def test_random_patch_with_crop_scale_two_spans_half_the_short_side() -> None:
    patch = pp.random_patch(coordinates(96, 128), 32, seed=3, crop_scale=2.0).numpy()
    span = (patch[-1, 0, 1] - patch[0, 0, 1]) * 95  # rows between first and last sample
    assert span == pytest.approx(48 - 1.5, abs=1.0)


def test_random_patch_enlarges_images_smaller_than_the_patch() -> None:
    patch = pp.random_patch(coordinates(20, 30), 32, seed=0).numpy()
    assert patch.shape == (32, 32, 3)
    # The whole short side (all 20 rows) is used.
    assert patch[0, 0, 1] < 0.05 and patch[-1, 0, 1] > 0.95


def test_random_patch_rejects_crop_scale_below_one() -> None:
    with pytest.raises(ValueError, match="crop_scale"):
        pp.random_patch(coordinates(20, 30), 16, seed=0, crop_scale=0.5)


# Datasets


def pairs(count: int) -> tf.data.Dataset:
    images = [noise_jpeg(48 + i, 64, seed=i) for i in range(count)]
    return tf.data.Dataset.from_tensor_slices((images, list(range(count))))


def test_make_dataset_eval_batches_in_order() -> None:
    dataset = pp.make_dataset(pairs(5), 32, training=False, batch_size=2)
    batches = list(dataset)
    assert [b[0].shape for b in batches] == [(2, 32, 32, 3), (2, 32, 32, 3), (1, 32, 32, 3)]
    assert np.concatenate([b[1].numpy() for b in batches]).tolist() == [0, 1, 2, 3, 4]
    assert all(b[0].dtype == tf.float32 for b in batches)


def test_make_dataset_training_is_reproducible_and_fresh_each_pass() -> None:
    def build() -> tf.data.Dataset:
        return pp.make_dataset(
            pairs(4), 32, training=True, batch_size=4, seed=11, deterministic=True
        )

    dataset = build()
    first_pass = next(iter(dataset))[0].numpy()
    second_pass = next(iter(dataset))[0].numpy()
    rebuilt = next(iter(build()))[0].numpy()
    np.testing.assert_array_equal(first_pass, rebuilt)
    assert not np.array_equal(first_pass, second_pass)
    assert first_pass.min() >= -1.0 and first_pass.max() <= 1.0


def test_make_dataset_drop_remainder_gives_static_batch() -> None:
    dataset = pp.make_dataset(pairs(5), 32, training=True, batch_size=2, drop_remainder=True)
    assert dataset.element_spec[0].shape == (2, 32, 32, 3)
    assert len(list(dataset)) == 2


# Real photographs


@pytest.fixture(scope="module")
def real_photos() -> list[Path]:
    photos = sorted(REAL_DROPS.glob("*.jpeg"))
    if not photos:
        pytest.skip(f"real drop photographs not found at {REAL_DROPS}")
    return photos


def test_real_photos_decode_and_preprocess(real_photos: list[Path]) -> None:
    for path in real_photos:
        data = path.read_bytes()
        decoded = pp.decode_image(data)
        assert decoded.shape == (960, 1280, 3), path.name
        for out in (
            pp.eval_preprocess(data, 599),
            pp.train_preprocess(data, 599, seed=1),
            pp.train_preprocess(data, 195, seed=1, crop_scale=1.0),
        ):
            values = out.numpy()
            assert values.shape[-1] == 3 and values.shape[0] == values.shape[1]
            assert values.min() >= -1.0 and values.max() <= 1.0, path.name
            assert values.std() > 0.01, path.name
