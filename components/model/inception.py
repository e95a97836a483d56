"""MARCO's Inception-v3 variant (Bruno et al. 2018, Sec. 3) in the tf-keras functional API.

The network follows slim's ``inception_v3`` (tensorflow/models, research/slim/nets/
inception_v3.py) block for block, with slim's scope names as Keras layer names, so a
layer here is ``Mixed_6b/Branch_2/Conv2d_0c_1x7`` exactly where slim's variable scope
is ``InceptionV3/Mixed_6b/Branch_2/Conv2d_0c_1x7``. Every convolution is slim's
``conv2d`` under ``inception_v3_arg_scope``: a bias-free Conv2D, batch norm without a
scale (epsilon 0.001) and ReLU; the stem uses 'VALID' padding, the Mixed blocks 'SAME'.

MARCO's changes (paper Sec. 3 and Table 3):

* a 16-filter 3x3 stride-2 convolution ``Conv2d_0a_3x3`` before ``Conv2d_1a_3x3``,
  which brings the 599x599 input down to 299x299, where stock Inception-v3 starts;
* depth caps per named layer (Table 3), applied as ``min(depth, cap)`` to every
  convolution inside the named block;
* no dropout and no auxiliary head; an average pool over the final map (8x8 at 599)
  and a 1x1 convolution to 4 logits.

How the caps give the released checkpoint's block widths. A block's output width is
the sum of its branch widths (plus the input width for 6a/7a, whose pooling branch
passes the input through). With ``min(depth, cap)`` on every convolution:

==========  =====================================  ======
block       branches (after the cap)               output
==========  =====================================  ======
Conv2d_4a   min(192, 144)                          144
Mixed_5b    64 + 64 + 96 + 32 (uncapped)           256
Mixed_5c    64 + 64 + 96 + 64                      288
Mixed_5d    64 + 64 + 96 + 64                      288
Mixed_6a    **256** + 96 + 288 (max-pool of 5d)    640
Mixed_6b    4 x min(192, 128)                      512
Mixed_6c    4 x min(192, 144)                      576
Mixed_6d    4 x min(192, 144)                      576
Mixed_6e    4 x min(192, 96)                       384
Mixed_7a    min(320, 96) + min(192, 96) + 384      576
Mixed_7b    192 + 2x192 + 2x192 + **96**           1056
Mixed_7c    192 + 2x192 + 2x192 + **96**           1056
==========  =====================================  ======

No single cap rule gives the two entries in bold. Mixed_6a is not in Table 3, yet its
3x3/2 branch has 256 filters where stock Inception-v3 has 384 (640 = 256 + 96 + 288);
and the pooling branches of Mixed_7b/7c have 96 filters where ``min(192, 192)`` gives
192 (1056 = 1152 - 96). The released checkpoint also has two interior layers that the
cap leaves alone although Table 3 names their blocks: ``Mixed_6c/Branch_2/
Conv2d_0b_7x1`` keeps 160 filters (cap 144) and ``Mixed_6e/Branch_2/Conv2d_0a_1x1``
keeps 192 (cap 96); they change no block width, only the parameter count. These are
the layers that public Keras ports of the released savedmodel size by hand to load its
variables with shape checks; neither the paper nor the release says why they differ.
:data:`RELEASED_CHECKPOINT_OVERRIDES` records them as per-layer depths that take
precedence over the caps, so :data:`PAPER` has the released checkpoint's shapes layer
for layer (8,964,068 parameters, 8,941,252 trainable); :data:`PAPER_TABLE3` is the
literal reading of Table 3, caps only (9,440,724 parameters), kept for comparison.

Width scaling follows slim's ``depth_multiplier`` and ``min_depth``: a layer's depth
is ``max(int(d * width_multiplier), min_depth)``, where ``d`` is the paper preset's
depth of that layer (override, else ``min(stock depth, cap)``). The small presets are
therefore the paper network shrunk uniformly, not stock Inception-v3 shrunk.

The configurations are plain data: TensorFlow is imported when a network is built, so
that the presets (and the training and pipeline presets naming them) load without it.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING

from components.names import NUM_CLASSES

if TYPE_CHECKING:
    import tensorflow as tf

# Table 3 of the paper: the most filters any convolution in the named layer may have.
PAPER_DEPTH_CAPS: Mapping[str, int] = types.MappingProxyType(
    {
        "Conv2d_4a_3x3": 144,
        "Mixed_6b": 128,
        "Mixed_6c": 144,
        "Mixed_6d": 144,
        "Mixed_6e": 96,
        "Mixed_7a": 96,
        "Mixed_7b": 192,
        "Mixed_7c": 192,
    }
)

# Layers whose depth in the released checkpoint no cap rule explains (module docstring).
RELEASED_CHECKPOINT_OVERRIDES: Mapping[str, int] = types.MappingProxyType(
    {
        "Mixed_6a/Branch_0/Conv2d_1a_1x1": 256,
        "Mixed_6c/Branch_2/Conv2d_0b_7x1": 160,
        "Mixed_6e/Branch_2/Conv2d_0a_1x1": 192,
        "Mixed_7b/Branch_3/Conv2d_0b_1x1": 96,
        "Mixed_7c/Branch_3/Conv2d_0b_1x1": 96,
    }
)

# Slim's end points of the base network, in order; each is also a layer name (see
# :func:`end_points`).
STEM_CONV_END_POINTS: tuple[str, ...] = (
    "Conv2d_0a_3x3",
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
)
MIXED_END_POINTS: tuple[str, ...] = (
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)
END_POINTS: tuple[str, ...] = (
    *STEM_CONV_END_POINTS[:4],
    "MaxPool_3a_3x3",
    *STEM_CONV_END_POINTS[4:],
    "MaxPool_5a_3x3",
    *MIXED_END_POINTS,
)

LOGITS_SCOPE = "Logits"
INPUT_NAME = "images"

_BATCH_NORM_EPSILON = 0.001  # slim's inception_v3_arg_scope


def _keras():
    """``tf.keras``, imported on first use (components/__init__.py has selected tf-keras)."""
    import tensorflow as tf

    return tf.keras


def _frozen(mapping: Mapping[str, int]) -> Mapping[str, int]:
    return types.MappingProxyType(dict(mapping))


def _valid(size: int, kernel: int = 3, stride: int = 1) -> int:
    return (size - kernel) // stride + 1


def final_map_size(input_size: int, stem_conv: bool) -> int:
    """Spatial size of Mixed_7c for a square input, following the network's strides.

    Args:
        input_size: side of the square input.
        stem_conv: whether MARCO's extra stride-2 ``Conv2d_0a_3x3`` is present.

    Returns:
        The side of the final feature map (8 for 599 with the extra conv, and for 299
        without it); zero or less when the input is too small for the network.
    """
    size = _valid(input_size, stride=2) if stem_conv else input_size
    size = _valid(size, stride=2)  # Conv2d_1a_3x3
    size = _valid(size)  # Conv2d_2a_3x3 (2b is SAME)
    size = _valid(size, stride=2)  # MaxPool_3a_3x3 (3b is 1x1)
    size = _valid(size)  # Conv2d_4a_3x3
    size = _valid(size, stride=2)  # MaxPool_5a_3x3
    size = _valid(size, stride=2)  # Mixed_6a
    return _valid(size, stride=2)  # Mixed_7a


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of the network; the presets below are the only instances the project uses.

    Attributes:
        input_size: side of the square input image, in pixels.
        depth_caps: most filters per convolution, keyed by slim layer or block name
            (``"Conv2d_4a_3x3"``, ``"Mixed_6b"``), in full-width units.
        width_multiplier: slim's ``depth_multiplier``; scales every layer's depth.
        min_depth: slim's ``min_depth``; no layer gets fewer filters after scaling.
        num_classes: logits per image.
        stem_conv: add MARCO's 16-filter 3x3 stride-2 ``Conv2d_0a_3x3`` in front.
        depth_overrides: depths of individual layers, keyed by full scope
            (``"Mixed_6a/Branch_0/Conv2d_1a_1x1"``), in full-width units; they take
            precedence over ``depth_caps``.
        batch_norm_decay: moving-average decay of the batch-norm statistics (Keras
            ``momentum``). Slim's 0.9997 suits millions of steps; short runs need a
            faster one or the evaluation statistics stay near their initial values.
        weight_decay: slim's L2 weight decay on convolution kernels (added to the
            model's losses; Keras ``fit`` includes it, custom loops add
            ``model.losses``).
    """

    input_size: int
    depth_caps: Mapping[str, int] = dataclasses.field(default_factory=lambda: _frozen({}))
    width_multiplier: float = 1.0
    min_depth: int = 16
    num_classes: int = NUM_CLASSES
    stem_conv: bool = True
    depth_overrides: Mapping[str, int] = dataclasses.field(default_factory=lambda: _frozen({}))
    batch_norm_decay: float = 0.9997
    weight_decay: float = 0.00004

    def __post_init__(self) -> None:
        if self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {self.width_multiplier}")
        if self.min_depth < 1:
            raise ValueError(f"min_depth must be at least 1, got {self.min_depth}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if final_map_size(self.input_size, self.stem_conv) < 1:
            minimum = 151 if self.stem_conv else 75
            raise ValueError(
                f"input_size {self.input_size} is too small: the network needs at least "
                f"{minimum} pixels (stem_conv={self.stem_conv})"
            )
        unknown = sorted(set(self.depth_caps) - {*STEM_CONV_END_POINTS, *MIXED_END_POINTS})
        if unknown:
            raise ValueError(f"depth_caps names unknown layers: {unknown}")
        # Read-only copies, so a preset cannot be changed through a dict it was built from.
        object.__setattr__(self, "depth_caps", _frozen(self.depth_caps))
        object.__setattr__(self, "depth_overrides", _frozen(self.depth_overrides))

    @property
    def final_map_size(self) -> int:
        """Side of the feature map that the final average pool reduces to 1x1."""
        return final_map_size(self.input_size, self.stem_conv)

    def depth(self, scope: str, stock_depth: int) -> int:
        """Number of filters of the convolution at ``scope``.

        Args:
            scope: slim scope of the layer, e.g. ``"Mixed_6b/Branch_1/Conv2d_0b_1x7"``.
            stock_depth: its depth in stock Inception-v3 (16 for ``Conv2d_0a_3x3``).

        Returns:
            ``max(int(d * width_multiplier), min_depth)`` where ``d`` is the override
            for ``scope`` if any, else ``min(stock_depth, cap of its block)``.
        """
        if scope in self.depth_overrides:
            full_width = self.depth_overrides[scope]
        else:
            block = scope.split("/", 1)[0]
            full_width = min(stock_depth, self.depth_caps.get(block, stock_depth))
        return max(int(full_width * self.width_multiplier), self.min_depth)


# The released MARCO model: 599x599 input, Table 3 caps and the checkpoint's exact
# layer depths.
PAPER = ModelConfig(
    input_size=599,
    depth_caps=PAPER_DEPTH_CAPS,
    depth_overrides=RELEASED_CHECKPOINT_OVERRIDES,
    stem_conv=True,
)

# Table 3 read literally (caps only); differs from the checkpoint in the four layers
# listed in RELEASED_CHECKPOINT_OVERRIDES.
PAPER_TABLE3 = ModelConfig(input_size=599, depth_caps=PAPER_DEPTH_CAPS, stem_conv=True)

# Unit tests on CPU: the smallest input stock Inception-v3 accepts (the extra stem conv
# would need 151), an eighth of the width. A training step on a batch of 8 takes about
# 50 ms on 2 CPU cores.
TINY = ModelConfig(
    input_size=75,
    depth_caps=PAPER_DEPTH_CAPS,
    depth_overrides=RELEASED_CHECKPOINT_OVERRIDES,
    width_multiplier=0.125,
    min_depth=8,
    stem_conv=False,
    batch_norm_decay=0.99,
)

# Laptop demo: keeps the extra stride-2 stem conv, so the first layer sees the drop at
# twice the resolution the rest of the network works at, as in the paper; about a
# third of the width. Trains at about 150 images/s on 2 CPU cores (batch 16).
DEMO = dataclasses.replace(TINY, input_size=195, width_multiplier=0.35, stem_conv=True)

PRESETS: Mapping[str, ModelConfig] = types.MappingProxyType(
    {"paper": PAPER, "paper_table3": PAPER_TABLE3, "tiny": TINY, "demo": DEMO}
)


class _Builder:
    """Adds slim-named layers to a functional graph according to a config."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.keras = _keras()
        self.used_overrides: set[str] = set()
        self.regularizer = (
            self.keras.regularizers.L2(config.weight_decay / 2.0)  # slim's l2 loss halves
            if config.weight_decay > 0
            else None
        )

    def _initializer(self) -> tf.keras.initializers.Initializer:
        # slim.variance_scaling_initializer() in inception_v3_arg_scope: He, truncated.
        return self.keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_in", distribution="truncated_normal"
        )

    def conv(
        self,
        x: tf.Tensor,
        scope: str,
        stock_depth: int,
        kernel: tuple[int, int],
        stride: int = 1,
        padding: str = "same",
    ) -> tf.Tensor:
        """Slim's conv2d: Conv2D without bias, batch norm without scale, ReLU."""
        if scope in self.config.depth_overrides:
            self.used_overrides.add(scope)
        filters = self.config.depth(scope, stock_depth)
        x = self.keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding=padding,
            use_bias=False,
            kernel_initializer=self._initializer(),
            kernel_regularizer=self.regularizer,
            name=scope,
        )(x)
        x = self.keras.layers.BatchNormalization(
            momentum=self.config.batch_norm_decay,
            epsilon=_BATCH_NORM_EPSILON,
            scale=False,
            name=f"{scope}/BatchNorm",
        )(x)
        return self.keras.layers.ReLU(name=f"{scope}/Relu")(x)

    def max_pool(self, x: tf.Tensor, scope: str, stride: int = 2) -> tf.Tensor:
        return self.keras.layers.MaxPooling2D(3, strides=stride, padding="valid", name=scope)(x)

    def avg_pool_same(self, x: tf.Tensor, scope: str) -> tf.Tensor:
        # TF's SAME average pooling leaves the padding out of the count, as slim does.
        return self.keras.layers.AveragePooling2D(3, strides=1, padding="same", name=scope)(x)

    def concat(self, tensors: list[tf.Tensor], name: str) -> tf.Tensor:
        return self.keras.layers.Concatenate(axis=-1, name=name)(tensors)

    # Blocks, in slim's order and with slim's (sometimes irregular) layer names.

    def stem(self, x: tf.Tensor, end_points: dict[str, tf.Tensor]) -> tf.Tensor:
        specs: list[tuple[str, int, tuple[int, int], int, str]] = []
        if self.config.stem_conv:
            specs.append(("Conv2d_0a_3x3", 16, (3, 3), 2, "valid"))
        specs += [
            ("Conv2d_1a_3x3", 32, (3, 3), 2, "valid"),
            ("Conv2d_2a_3x3", 32, (3, 3), 1, "valid"),
            ("Conv2d_2b_3x3", 64, (3, 3), 1, "same"),
            ("MaxPool_3a_3x3", 0, (3, 3), 2, "valid"),
            ("Conv2d_3b_1x1", 80, (1, 1), 1, "valid"),
            ("Conv2d_4a_3x3", 192, (3, 3), 1, "valid"),
            ("MaxPool_5a_3x3", 0, (3, 3), 2, "valid"),
        ]
        for scope, stock_depth, kernel, stride, padding in specs:
            if scope.startswith("MaxPool"):
                x = self.max_pool(x, scope, stride)
            else:
                x = self.conv(x, scope, stock_depth, kernel, stride, padding)
            end_points[scope] = x
        return x

    def mixed_5(
        self, x: tf.Tensor, block: str, pool_depth: int, branch_1_names: tuple[str, str]
    ) -> tf.Tensor:
        b0 = self.conv(x, f"{block}/Branch_0/Conv2d_0a_1x1", 64, (1, 1))
        b1 = self.conv(x, f"{block}/Branch_1/{branch_1_names[0]}", 48, (1, 1))
        b1 = self.conv(b1, f"{block}/Branch_1/{branch_1_names[1]}", 64, (5, 5))
        b2 = self.conv(x, f"{block}/Branch_2/Conv2d_0a_1x1", 64, (1, 1))
        b2 = self.conv(b2, f"{block}/Branch_2/Conv2d_0b_3x3", 96, (3, 3))
        b2 = self.conv(b2, f"{block}/Branch_2/Conv2d_0c_3x3", 96, (3, 3))
        b3 = self.avg_pool_same(x, f"{block}/Branch_3/AvgPool_0a_3x3")
        b3 = self.conv(b3, f"{block}/Branch_3/Conv2d_0b_1x1", pool_depth, (1, 1))
        return self.concat([b0, b1, b2, b3], block)

    def mixed_6a(self, x: tf.Tensor) -> tf.Tensor:
        block = "Mixed_6a"
        # Slim names these two 3x3 stride-2 convolutions "Conv2d_1a_1x1".
        b0 = self.conv(x, f"{block}/Branch_0/Conv2d_1a_1x1", 384, (3, 3), 2, "valid")
        b1 = self.conv(x, f"{block}/Branch_1/Conv2d_0a_1x1", 64, (1, 1))
        b1 = self.conv(b1, f"{block}/Branch_1/Conv2d_0b_3x3", 96, (3, 3))
        b1 = self.conv(b1, f"{block}/Branch_1/Conv2d_1a_1x1", 96, (3, 3), 2, "valid")
        b2 = self.max_pool(x, f"{block}/Branch_2/MaxPool_1a_3x3")
        return self.concat([b0, b1, b2], block)

    def mixed_6(self, x: tf.Tensor, block: str, inner: int) -> tf.Tensor:
        b0 = self.conv(x, f"{block}/Branch_0/Conv2d_0a_1x1", 192, (1, 1))
        b1 = self.conv(x, f"{block}/Branch_1/Conv2d_0a_1x1", inner, (1, 1))
        b1 = self.conv(b1, f"{block}/Branch_1/Conv2d_0b_1x7", inner, (1, 7))
        b1 = self.conv(b1, f"{block}/Branch_1/Conv2d_0c_7x1", 192, (7, 1))
        b2 = self.conv(x, f"{block}/Branch_2/Conv2d_0a_1x1", inner, (1, 1))
        b2 = self.conv(b2, f"{block}/Branch_2/Conv2d_0b_7x1", inner, (7, 1))
        b2 = self.conv(b2, f"{block}/Branch_2/Conv2d_0c_1x7", inner, (1, 7))
        b2 = self.conv(b2, f"{block}/Branch_2/Conv2d_0d_7x1", inner, (7, 1))
        b2 = self.conv(b2, f"{block}/Branch_2/Conv2d_0e_1x7", 192, (1, 7))
        b3 = self.avg_pool_same(x, f"{block}/Branch_3/AvgPool_0a_3x3")
        b3 = self.conv(b3, f"{block}/Branch_3/Conv2d_0b_1x1", 192, (1, 1))
        return self.concat([b0, b1, b2, b3], block)

    def mixed_7a(self, x: tf.Tensor) -> tf.Tensor:
        block = "Mixed_7a"
        b0 = self.conv(x, f"{block}/Branch_0/Conv2d_0a_1x1", 192, (1, 1))
        b0 = self.conv(b0, f"{block}/Branch_0/Conv2d_1a_3x3", 320, (3, 3), 2, "valid")
        b1 = self.conv(x, f"{block}/Branch_1/Conv2d_0a_1x1", 192, (1, 1))
        b1 = self.conv(b1, f"{block}/Branch_1/Conv2d_0b_1x7", 192, (1, 7))
        b1 = self.conv(b1, f"{block}/Branch_1/Conv2d_0c_7x1", 192, (7, 1))
        b1 = self.conv(b1, f"{block}/Branch_1/Conv2d_1a_3x3", 192, (3, 3), 2, "valid")
        b2 = self.max_pool(x, f"{block}/Branch_2/MaxPool_1a_3x3")
        return self.concat([b0, b1, b2], block)

    def mixed_7(self, x: tf.Tensor, block: str, branch_1_3x1: str) -> tf.Tensor:
        b0 = self.conv(x, f"{block}/Branch_0/Conv2d_0a_1x1", 320, (1, 1))
        b1 = self.conv(x, f"{block}/Branch_1/Conv2d_0a_1x1", 384, (1, 1))
        b1 = self.concat(
            [
                self.conv(b1, f"{block}/Branch_1/Conv2d_0b_1x3", 384, (1, 3)),
                self.conv(b1, f"{block}/Branch_1/{branch_1_3x1}", 384, (3, 1)),
            ],
            f"{block}/Branch_1/concat",
        )
        b2 = self.conv(x, f"{block}/Branch_2/Conv2d_0a_1x1", 448, (1, 1))
        b2 = self.conv(b2, f"{block}/Branch_2/Conv2d_0b_3x3", 384, (3, 3))
        b2 = self.concat(
            [
                self.conv(b2, f"{block}/Branch_2/Conv2d_0c_1x3", 384, (1, 3)),
                self.conv(b2, f"{block}/Branch_2/Conv2d_0d_3x1", 384, (3, 1)),
            ],
            f"{block}/Branch_2/concat",
        )
        b3 = self.avg_pool_same(x, f"{block}/Branch_3/AvgPool_0a_3x3")
        b3 = self.conv(b3, f"{block}/Branch_3/Conv2d_0b_1x1", 192, (1, 1))
        return self.concat([b0, b1, b2, b3], block)

    def base(self, x: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        end_points: dict[str, tf.Tensor] = {}
        x = self.stem(x, end_points)
        regular_5x5 = ("Conv2d_0a_1x1", "Conv2d_0b_5x5")
        # Slim's Mixed_5c names its 5x5 branch irregularly; kept for checkpoint names.
        irregular_5x5 = ("Conv2d_0b_1x1", "Conv_1_0c_5x5")
        blocks = [
            ("Mixed_5b", lambda t: self.mixed_5(t, "Mixed_5b", 32, regular_5x5)),
            ("Mixed_5c", lambda t: self.mixed_5(t, "Mixed_5c", 64, irregular_5x5)),
            ("Mixed_5d", lambda t: self.mixed_5(t, "Mixed_5d", 64, regular_5x5)),
            ("Mixed_6a", self.mixed_6a),
            ("Mixed_6b", lambda t: self.mixed_6(t, "Mixed_6b", 128)),
            ("Mixed_6c", lambda t: self.mixed_6(t, "Mixed_6c", 160)),
            ("Mixed_6d", lambda t: self.mixed_6(t, "Mixed_6d", 160)),
            ("Mixed_6e", lambda t: self.mixed_6(t, "Mixed_6e", 192)),
            ("Mixed_7a", self.mixed_7a),
            ("Mixed_7b", lambda t: self.mixed_7(t, "Mixed_7b", "Conv2d_0b_3x1")),
            ("Mixed_7c", lambda t: self.mixed_7(t, "Mixed_7c", "Conv2d_0c_3x1")),
        ]
        for name, block in blocks:
            x = block(x)
            end_points[name] = x
        unused = sorted(set(self.config.depth_overrides) - self.used_overrides)
        if unused:
            # A misspelt scope would otherwise be ignored without a word.
            raise ValueError(f"depth_overrides name layers the network does not have: {unused}")
        return x, end_points

    def logits(self, x: tf.Tensor) -> tf.Tensor:
        size = self.config.final_map_size
        # Slim pools with min(map, 8); pooling the whole map is the same for every map of
        # 8 or less (599 gives exactly 8) and still yields 1x1 logits for larger inputs.
        x = self.keras.layers.AveragePooling2D(
            size, padding="valid", name=f"{LOGITS_SCOPE}/AvgPool_1a_{size}x{size}"
        )(x)
        x = self.keras.layers.Conv2D(
            self.config.num_classes,
            1,
            use_bias=True,
            kernel_initializer=self._initializer(),
            kernel_regularizer=self.regularizer,
            name=f"{LOGITS_SCOPE}/Conv2d_1c_1x1",
        )(x)
        return self.keras.layers.Reshape(
            (self.config.num_classes,), name=f"{LOGITS_SCOPE}/SpatialSqueeze"
        )(x)


def inception_v3_base(
    inputs: tf.Tensor, config: ModelConfig
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Adds the network up to Mixed_7c to a functional graph, like slim's function.

    Args:
        inputs: a Keras tensor of images scaled to [-1, 1], ``[batch, S, S, 3]``.
        config: the network's shape.

    Returns:
        The Mixed_7c tensor and slim's end points (:data:`END_POINTS`, without
        ``Conv2d_0a_3x3`` when ``config.stem_conv`` is off), name to tensor.

    Raises:
        ValueError: if ``config.depth_overrides`` names a layer the network lacks, which
            would otherwise be silently ignored.
    """
    return _Builder(config).base(inputs)


def build_model(config: ModelConfig) -> tf.keras.Model:
    """Builds the classifier: images scaled to [-1, 1] in, one logit per class out.

    Args:
        config: the network's shape, usually one of :data:`PRESETS`.

    Returns:
        A functional ``tf.keras.Model`` from float32 ``[batch, S, S, 3]`` images
        (``S = config.input_size``) to float32 ``[batch, num_classes]`` logits. It has
        no softmax, dropout or auxiliary head.
    """
    builder = _Builder(config)
    inputs = builder.keras.Input(
        shape=(config.input_size, config.input_size, 3), dtype="float32", name=INPUT_NAME
    )
    net, _ = builder.base(inputs)
    logits = builder.logits(net)
    return builder.keras.Model(inputs, logits, name="marco_inception_v3")


def end_points(model: tf.keras.Model) -> dict[str, tf.Tensor]:
    """Slim's end points of a model from :func:`build_model`, read off its layers.

    A stem convolution's end point is its ReLU output, a pool's or block's the layer's
    output, as in slim. Useful with ``tf.keras.Model(model.inputs, end_points(model))``
    to look inside a trained model without rebuilding it.

    Args:
        model: a model returned by :func:`build_model`.

    Returns:
        End-point name to symbolic tensor, in network order, for the end points the
        model has.
    """
    names = {layer.name for layer in model.layers}
    points: dict[str, tf.Tensor] = {}
    for name in END_POINTS:
        layer_name = f"{name}/Relu" if name in STEM_CONV_END_POINTS else name
        if layer_name in names:
            points[name] = model.get_layer(layer_name).output
    return points
