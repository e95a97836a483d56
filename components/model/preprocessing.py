"""Image decoding, evaluation crop and training augmentation for MARCO, in TensorFlow ops.

Everything here is graph-compatible, so the same functions run in tf.data pipelines,
in the Trainer and inside the SavedModel serving signature. Decoded images are cropped
while still integers, processed as float32 in [0, 1], and leave as float32 in [-1, 1]
(the range the network expects, as slim's Inception preprocessing produces).

One function, :func:`eval_preprocess`, serves both evaluation during training and the
serving signature, so the model is scored on exactly what it will be given. It repeats
the released MARCO model's serving graph step for step (central square crop, bilinear
resize on TensorFlow 1's pixel grid, ``(x - 0.5) * 2``), so weights imported from the
released model see in this project's serving signatures what they saw in the released
one. Training augmentation (:func:`random_patch`, :func:`decode_for_training`) keeps
TensorFlow 2's half-pixel grid; docs/ml-engineers.md ("Serving preprocessing") says
why the two differ.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# Importing this module runs components/__init__.py first, which selects tf-keras.
import tensorflow as tf

# Photometric distortions of the paper (Sec. 3), slim's distort_color values.
BRIGHTNESS_MAX_DELTA = 32.0 / 255.0
SATURATION_RANGE = (0.5, 1.5)
HUE_MAX_DELTA = 0.2
CONTRAST_RANGE = (0.5, 1.5)

SeedLike = int | tf.Tensor


def decode_image(image_bytes: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Decodes one encoded image (JPEG, PNG, GIF, BMP) to a 3-channel RGB tensor.

    The decoder does the colour and depth conversions itself: greyscale is repeated
    to RGB, an alpha channel is dropped, and the pixel values are converted from the
    file's own depth (8 or 16 bits) as ``tf.image.convert_image_dtype`` would, so a
    16-bit PNG keeps its precision when decoded to float. Animated GIFs give their
    first frame.

    Args:
        image_bytes: scalar string tensor with the encoded image.
        dtype: ``tf.float32`` (values in [0, 1]), ``tf.uint8`` or ``tf.uint16``. Only
            PNG decodes 8-bit data to uint16 exactly (x 257); the other decoders
            follow convert_image_dtype's integer rule (x 256, white = 65280).

    Returns:
        ``[height, width, 3]`` tensor of ``dtype``.
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=dtype, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _is_png(image_bytes: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(image_bytes, 0, 8), b"\x89PNG\r\n\x1a\n")


def _decode_then(image_bytes: tf.Tensor, to_float: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Decodes at the file's own bit depth, then lets ``to_float`` crop and convert.

    Cropping an integer image before converting it to float skips converting pixels
    that are thrown away (a third of a 1280x960 photograph for a centre crop, most of
    it for a 599 patch). Only PNG can hold 16 bits, so PNGs are decoded to uint16 (8-bit
    ones are scaled exactly, by 257) and everything else to uint8: asking the other
    decoders for uint16 scales by 256, which would put white at 0.996.
    """
    return tf.cond(
        _is_png(image_bytes),
        lambda: to_float(decode_image(image_bytes, dtype=tf.uint16)),
        lambda: to_float(decode_image(image_bytes, dtype=tf.uint8)),
    )


def to_symmetric_range(image: tf.Tensor) -> tf.Tensor:
    """Maps a float image from [0, 1] to [-1, 1], clipping first."""
    return tf.clip_by_value(image, 0.0, 1.0) * 2.0 - 1.0


def central_square_crop(image: tf.Tensor) -> tf.Tensor:
    """Crops the largest centred square out of ``[height, width, channels]``.

    Odd margins leave the extra pixel on the bottom/right, as
    ``tf.image.crop_to_bounding_box`` with floored offsets does.
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    return image[top : top + side, left : left + side, :]


def legacy_resize_bilinear(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize of ``[height, width, channels]`` to ``size`` square, TF 1's way.

    TensorFlow 1's ``ResizeBilinear`` (``align_corners=False``, before half-pixel
    centres existed) maps output pixel ``i`` to input position ``i * in / out``;
    ``tf.image.resize`` maps it to ``(i + 0.5) * in / out - 0.5``. On a 960-pixel
    square shrunk to 599 the two grids are 0.3 input pixels apart, which moves the
    released model's probabilities by more than serving parity allows.
    """
    resized = tf.raw_ops.ResizeBilinear(
        images=image[tf.newaxis], size=[size, size], align_corners=False,
        half_pixel_centers=False,
    )
    return resized[0]


def from_unit_range(image: tf.Tensor) -> tf.Tensor:
    """Maps a float image from [0, 1] to [-1, 1] as the released graph does: ``(x - 0.5) * 2``.

    Values are clipped to [0, 1] first (a no-op for decoded and resized pixels, but
    for rounding).
    """
    return (tf.clip_by_value(image, 0.0, 1.0) - 0.5) * 2.0


def eval_preprocess(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """Prepares one image for the network exactly as the released MARCO model does.

    Central square crop (the whole short side, offsets floored), bilinear resize to
    ``size`` square on TensorFlow 1's pixel grid (:func:`legacy_resize_bilinear`),
    ``(x - 0.5) * 2`` to [-1, 1]. No distortion. Used for evaluation during training
    and in the serving signatures, so both see identical inputs; for a JPEG at 599 it
    gives what the released serving graph feeds its network, to float rounding.

    Args:
        image_bytes: scalar string tensor with an encoded image.
        size: side of the square output.

    Returns:
        float32 ``[size, size, 3]`` in [-1, 1].
    """

    def crop_and_resize(image: tf.Tensor) -> tf.Tensor:
        image = tf.image.convert_image_dtype(central_square_crop(image), tf.float32)
        return legacy_resize_bilinear(image, size)

    return from_unit_range(_decode_then(image_bytes, crop_and_resize))


def _as_seed(seed: SeedLike) -> tf.Tensor:
    """A stateless-op seed (shape [2], int64) from a Python int or a [2] tensor."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], dtype=tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.constant(0, tf.int64)])
    return seed


def random_patch(
    image: tf.Tensor, size: int, seed: SeedLike, crop_scale: float | None = None
) -> tf.Tensor:
    """Takes a random ``size`` x ``size`` patch of an image, at a chosen scale.

    The paper trains on "random 599x599 patches of the input images". Taken literally
    (``crop_scale=None``) the patch is cut at the image's own resolution; an image
    whose short side is below ``size`` is first enlarged until it is exactly ``size``.
    At 599 on 1280x960 photographs such a patch spans 62% of the short side, and it
    is seen at 1.6 times the scale of :func:`eval_preprocess`, which shrinks the whole
    960-pixel square to 599.

    With ``crop_scale`` the image is first resized so that its short side is
    ``size * crop_scale`` (at least ``size``), then the patch is cut: ``1.0`` keeps the
    whole short side (a random square along the long side, at the evaluation scale),
    ``1.15`` keeps 87% of it. Small presets need this: a literal 195-pixel patch of a
    1280x960 photograph shows a sliver of the drop.

    The patch is located in the original image and only that window is converted to
    float and resized, which is the same as resizing first and cropping after but
    cheaper.

    Args:
        image: ``[height, width, 3]``, integer (converted as by
            ``tf.image.convert_image_dtype``) or float in [0, 1].
        size: side of the square patch.
        seed: stateless seed (a Python int or an int ``[2]`` tensor).
        crop_scale: ``None`` for the paper's native-resolution patches, else the short
            side to resize to, as a multiple of ``size`` (>= 1).

    Returns:
        float32 ``[size, size, 3]``.

    Raises:
        ValueError: if ``crop_scale`` is below 1, since the patch must fit the image.
    """
    if crop_scale is not None and crop_scale < 1.0:
        raise ValueError(f"crop_scale must be at least 1 (or None), got {crop_scale}")
    seed = _as_seed(seed)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short = tf.cast(tf.minimum(height, width), tf.float32)
    if crop_scale is None:
        target_short = tf.maximum(short, float(size))
    else:
        target_short = tf.constant(max(round(size * crop_scale), size), tf.float32)
    # Side of the window in source pixels that becomes `size` pixels after resizing.
    window = tf.cast(tf.round(float(size) * short / target_short), tf.int32)
    window = tf.clip_by_value(window, 1, tf.cast(short, tf.int32))
    top_seed, left_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    top = tf.random.stateless_uniform(
        [], top_seed, minval=0, maxval=height - window + 1, dtype=tf.int32
    )
    left = tf.random.stateless_uniform(
        [], left_seed, minval=0, maxval=width - window + 1, dtype=tf.int32
    )
    patch = image[top : top + window, left : left + window, :]
    patch = tf.image.convert_image_dtype(patch, tf.float32)
    patch = tf.image.resize(patch, [size, size], method=tf.image.ResizeMethod.BILINEAR)
    patch.set_shape([size, size, 3])
    return patch


def distort_color(image: tf.Tensor, seed: SeedLike) -> tf.Tensor:
    """Random brightness, saturation, hue and contrast, as slim's ``distort_color``.

    Slim's Inception preprocessing (the reference the paper follows) applies the four
    distortions in one of four orders picked at random per image, and clips to [0, 1]
    only at the end; both are kept.

    Args:
        image: float ``[height, width, 3]`` in [0, 1].
        seed: stateless seed.

    Returns:
        The distorted image, clipped to [0, 1].
    """
    seeds = tf.unstack(tf.random.experimental.stateless_split(_as_seed(seed), 5))

    def brightness(x: tf.Tensor) -> tf.Tensor:
        return tf.image.stateless_random_brightness(x, BRIGHTNESS_MAX_DELTA, seeds[0])

    def saturation(x: tf.Tensor) -> tf.Tensor:
        return tf.image.stateless_random_saturation(x, *SATURATION_RANGE, seed=seeds[1])

    def hue(x: tf.Tensor) -> tf.Tensor:
        return tf.image.stateless_random_hue(x, HUE_MAX_DELTA, seeds[2])

    def contrast(x: tf.Tensor) -> tf.Tensor:
        return tf.image.stateless_random_contrast(x, *CONTRAST_RANGE, seed=seeds[3])

    orderings = (
        (brightness, saturation, hue, contrast),
        (saturation, brightness, contrast, hue),
        (contrast, hue, brightness, saturation),
        (hue, saturation, contrast, brightness),
    )

    def apply(ops: tuple) -> tf.Tensor:
        x = image
        for op in ops:
            x = op(x)
        return x

    ordering = tf.random.stateless_uniform(
        [], seeds[4], minval=0, maxval=len(orderings), dtype=tf.int32
    )
    distorted = tf.switch_case(ordering, [lambda ops=ops: apply(ops) for ops in orderings])
    distorted.set_shape(image.shape)
    return tf.clip_by_value(distorted, 0.0, 1.0)


def random_flips(image: tf.Tensor, seed: SeedLike) -> tf.Tensor:
    """Flips left-right and, independently, up-down, each with probability 1/2.

    Drops have no preferred orientation, so unlike natural scenes the up-down flip is
    a valid augmentation (paper Sec. 3).
    """
    lr_seed, ud_seed = tf.unstack(tf.random.experimental.stateless_split(_as_seed(seed), 2))
    image = tf.image.stateless_random_flip_left_right(image, lr_seed)
    return tf.image.stateless_random_flip_up_down(image, ud_seed)


def train_preprocess(
    image_bytes: tf.Tensor,
    size: int,
    seed: SeedLike | None = None,
    crop_scale: float | None = None,
) -> tf.Tensor:
    """Decodes and augments one training image as in the paper.

    Random ``size`` square patch (see :func:`random_patch` for ``crop_scale``), random
    left-right and up-down flips, random brightness (+-32/255), saturation (0.5-1.5),
    hue (+-0.2) and contrast (0.5-1.5), clip, scale to [-1, 1].

    Args:
        image_bytes: scalar string tensor with an encoded image.
        size: side of the square output.
        seed: stateless seed (Python int or int ``[2]`` tensor); the same seed gives
            the same output. ``None`` draws one at random.
        crop_scale: passed to :func:`random_patch`.

    Returns:
        float32 ``[size, size, 3]`` in [-1, 1].
    """
    return _augment(
        lambda decoder: _decode_then(image_bytes, decoder), size, seed, crop_scale
    )


def _augment(
    patch_source: Callable[[Callable[[tf.Tensor], tf.Tensor]], tf.Tensor],
    size: int,
    seed: SeedLike | None,
    crop_scale: float | None,
) -> tf.Tensor:
    """The paper's augmentation of one image given by ``patch_source``.

    ``patch_source(cut)`` applies ``cut`` (decoded integer image -> float patch) to the
    image, however it is held (encoded bytes, or a decoded and rescaled copy).
    """
    if seed is None:
        seed = tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
    patch_seed, flip_seed, color_seed = tf.unstack(
        tf.random.experimental.stateless_split(_as_seed(seed), 3)
    )
    image = patch_source(lambda decoded: random_patch(decoded, size, patch_seed, crop_scale))
    image = random_flips(image, flip_seed)
    image = distort_color(image, color_seed)
    return to_symmetric_range(image)


def training_scale_side(size: int, crop_scale: float) -> int:
    """Short side, in pixels, of an image rescaled for ``crop_scale`` patches of ``size``."""
    if crop_scale < 1.0:
        raise ValueError(f"crop_scale must be at least 1, got {crop_scale}")
    return max(round(size * crop_scale), size)


def decode_for_training(image_bytes: tf.Tensor, size: int, crop_scale: float) -> tf.Tensor:
    """Decodes an image and rescales it to the scale its training patches are cut at.

    The short side becomes :func:`training_scale_side` (the aspect ratio is kept), and
    the result is 8-bit, a few hundred kilobytes for a small preset, so a data set's
    worth can be cached in memory and only the random patch, flips and colour
    distortion (:func:`augment_decoded`) are redone each epoch. Together the two give
    what :func:`train_preprocess` gives with the same ``crop_scale``, but from a
    different random window and with the pixels rounded to 8 bits once.

    Args:
        image_bytes: scalar string tensor with an encoded image.
        size: side of the square training patch.
        crop_scale: as in :func:`random_patch`; a number, since caching needs a fixed
            scale (the paper's native-resolution patches keep the full image).

    Returns:
        uint8 ``[height, width, 3]`` with ``min(height, width)`` equal to
        :func:`training_scale_side`.
    """
    side = training_scale_side(size, crop_scale)

    def rescale(decoded: tf.Tensor) -> tf.Tensor:
        shape = tf.cast(tf.shape(decoded)[:2], tf.float32)
        factor = float(side) / tf.reduce_min(shape)
        target = tf.maximum(tf.cast(tf.round(shape * factor), tf.int32), side)
        image = tf.image.convert_image_dtype(decoded, tf.float32)
        image = tf.image.resize(image, target, method=tf.image.ResizeMethod.BILINEAR)
        return tf.image.convert_image_dtype(tf.clip_by_value(image, 0.0, 1.0), tf.uint8)

    return _decode_then(image_bytes, rescale)


def augment_decoded(image: tf.Tensor, size: int, seed: SeedLike | None = None) -> tf.Tensor:
    """:func:`train_preprocess`'s augmentation of an image from :func:`decode_for_training`.

    The image is already at the patch scale, so the random ``size`` square is cut
    without resizing; flips and colour distortion follow as in
    :func:`train_preprocess`.

    Returns:
        float32 ``[size, size, 3]`` in [-1, 1].
    """
    return _augment(lambda cut: cut(image), size, seed, None)


def make_dataset(
    dataset: tf.data.Dataset,
    size: int,
    *,
    training: bool,
    batch_size: int,
    seed: int | None = None,
    crop_scale: float | None = None,
    deterministic: bool | None = None,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Turns ``(image_bytes, label)`` pairs into batches of network inputs.

    Training elements get :func:`train_preprocess` with a per-element seed drawn from
    ``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)``: a fixed
    ``seed`` makes the whole stream reproducible, yet every pass over the data (each
    Keras epoch, each ``repeat``) draws fresh crops and distortions, as the paper's
    260 passes need. Evaluation elements get :func:`eval_preprocess`.

    Args:
        dataset: elements ``(image_bytes, label)``: a scalar string and any label
            tensor, which is passed through unchanged.
        size: side of the square images the network takes.
        training: augment (True) or centre-crop (False).
        batch_size: examples per batch.
        seed: makes the augmentation reproducible; ``None`` for a random one.
        crop_scale: passed to :func:`random_patch` when training.
        deterministic: order guarantee of the parallel map; ``None`` follows the
            dataset's options (deterministic unless they say otherwise).
        num_parallel_calls: parallelism of the map; AUTOTUNE by default.
        drop_remainder: drop a last, smaller batch (needed for static batch shapes).

    Returns:
        Prefetched batches ``(images [batch, size, size, 3] float32 in [-1, 1], labels)``.
    """
    if training:
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds))

        def preprocess(example: tuple[tf.Tensor, tf.Tensor], element_seed: tf.Tensor):
            image_bytes, label = example
            return train_preprocess(image_bytes, size, element_seed, crop_scale), label

    else:

        def preprocess(image_bytes: tf.Tensor, label: tf.Tensor):
            return eval_preprocess(image_bytes, size), label

    dataset = dataset.map(
        preprocess, num_parallel_calls=num_parallel_calls, deterministic=deterministic
    )
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
