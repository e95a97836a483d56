"""The MARCO Inception-v3 variant against the released checkpoint's shapes and slim's layout."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import components  # noqa: F401  (tf-keras must be selected before TensorFlow loads)

# isort: split
import tensorflow as tf

from components.model import inception
from components.model.inception import DEMO, PAPER, PAPER_TABLE3, TINY, ModelConfig
from components.names import NUM_CLASSES

# Output channels of every end point of the released MARCO checkpoint.
PAPER_CHANNELS = {
    "Conv2d_0a_3x3": 16,
    "Conv2d_1a_3x3": 32,
    "Conv2d_2a_3x3": 32,
    "Conv2d_2b_3x3": 64,
    "MaxPool_3a_3x3": 64,
    "Conv2d_3b_1x1": 80,
    "Conv2d_4a_3x3": 144,
    "MaxPool_5a_3x3": 144,
    "Mixed_5b": 256,
    "Mixed_5c": 288,
    "Mixed_5d": 288,
    "Mixed_6a": 640,
    "Mixed_6b": 512,
    "Mixed_6c": 576,
    "Mixed_6d": 576,
    "Mixed_6e": 384,
    "Mixed_7a": 576,
    "Mixed_7b": 1056,
    "Mixed_7c": 1056,
}

# Every convolution of the paper preset as (kernel height, kernel width, input
# channels, filters), written out by hand from slim's inception_v3.py, Table 3 of the
# paper and the released checkpoint's four hand-sized layers (marked), independently of
# the code that builds the model.
PAPER_CONVS: dict[str, tuple[int, int, int, int]] = {
    "Conv2d_0a_3x3": (3, 3, 3, 16),
    "Conv2d_1a_3x3": (3, 3, 16, 32),
    "Conv2d_2a_3x3": (3, 3, 32, 32),
    "Conv2d_2b_3x3": (3, 3, 32, 64),
    "Conv2d_3b_1x1": (1, 1, 64, 80),
    "Conv2d_4a_3x3": (3, 3, 80, 144),
    # Mixed_5b: input 144 (Conv2d_4a capped), output 64 + 64 + 96 + 32 = 256.
    "Mixed_5b/Branch_0/Conv2d_0a_1x1": (1, 1, 144, 64),
    "Mixed_5b/Branch_1/Conv2d_0a_1x1": (1, 1, 144, 48),
    "Mixed_5b/Branch_1/Conv2d_0b_5x5": (5, 5, 48, 64),
    "Mixed_5b/Branch_2/Conv2d_0a_1x1": (1, 1, 144, 64),
    "Mixed_5b/Branch_2/Conv2d_0b_3x3": (3, 3, 64, 96),
    "Mixed_5b/Branch_2/Conv2d_0c_3x3": (3, 3, 96, 96),
    "Mixed_5b/Branch_3/Conv2d_0b_1x1": (1, 1, 144, 32),
    # Mixed_5c: input 256, output 288; slim's irregular names in Branch_1.
    "Mixed_5c/Branch_0/Conv2d_0a_1x1": (1, 1, 256, 64),
    "Mixed_5c/Branch_1/Conv2d_0b_1x1": (1, 1, 256, 48),
    "Mixed_5c/Branch_1/Conv_1_0c_5x5": (5, 5, 48, 64),
    "Mixed_5c/Branch_2/Conv2d_0a_1x1": (1, 1, 256, 64),
    "Mixed_5c/Branch_2/Conv2d_0b_3x3": (3, 3, 64, 96),
    "Mixed_5c/Branch_2/Conv2d_0c_3x3": (3, 3, 96, 96),
    "Mixed_5c/Branch_3/Conv2d_0b_1x1": (1, 1, 256, 64),
    # Mixed_5d: input 288, output 288.
    "Mixed_5d/Branch_0/Conv2d_0a_1x1": (1, 1, 288, 64),
    "Mixed_5d/Branch_1/Conv2d_0a_1x1": (1, 1, 288, 48),
    "Mixed_5d/Branch_1/Conv2d_0b_5x5": (5, 5, 48, 64),
    "Mixed_5d/Branch_2/Conv2d_0a_1x1": (1, 1, 288, 64),
    "Mixed_5d/Branch_2/Conv2d_0b_3x3": (3, 3, 64, 96),
    "Mixed_5d/Branch_2/Conv2d_0c_3x3": (3, 3, 96, 96),
    "Mixed_5d/Branch_3/Conv2d_0b_1x1": (1, 1, 288, 64),
    # Mixed_6a: input 288, output 256 + 96 + 288 (max pool) = 640.
    "Mixed_6a/Branch_0/Conv2d_1a_1x1": (3, 3, 288, 256),  # checkpoint: 256, stock 384
    "Mixed_6a/Branch_1/Conv2d_0a_1x1": (1, 1, 288, 64),
    "Mixed_6a/Branch_1/Conv2d_0b_3x3": (3, 3, 64, 96),
    "Mixed_6a/Branch_1/Conv2d_1a_1x1": (3, 3, 96, 96),
    # Mixed_6b: input 640, cap 128, output 4 x 128 = 512.
    "Mixed_6b/Branch_0/Conv2d_0a_1x1": (1, 1, 640, 128),
    "Mixed_6b/Branch_1/Conv2d_0a_1x1": (1, 1, 640, 128),
    "Mixed_6b/Branch_1/Conv2d_0b_1x7": (1, 7, 128, 128),
    "Mixed_6b/Branch_1/Conv2d_0c_7x1": (7, 1, 128, 128),
    "Mixed_6b/Branch_2/Conv2d_0a_1x1": (1, 1, 640, 128),
    "Mixed_6b/Branch_2/Conv2d_0b_7x1": (7, 1, 128, 128),
    "Mixed_6b/Branch_2/Conv2d_0c_1x7": (1, 7, 128, 128),
    "Mixed_6b/Branch_2/Conv2d_0d_7x1": (7, 1, 128, 128),
    "Mixed_6b/Branch_2/Conv2d_0e_1x7": (1, 7, 128, 128),
    "Mixed_6b/Branch_3/Conv2d_0b_1x1": (1, 1, 640, 128),
    # Mixed_6c: input 512, cap 144, output 576.
    "Mixed_6c/Branch_0/Conv2d_0a_1x1": (1, 1, 512, 144),
    "Mixed_6c/Branch_1/Conv2d_0a_1x1": (1, 1, 512, 144),
    "Mixed_6c/Branch_1/Conv2d_0b_1x7": (1, 7, 144, 144),
    "Mixed_6c/Branch_1/Conv2d_0c_7x1": (7, 1, 144, 144),
    "Mixed_6c/Branch_2/Conv2d_0a_1x1": (1, 1, 512, 144),
    "Mixed_6c/Branch_2/Conv2d_0b_7x1": (7, 1, 144, 160),  # checkpoint: uncapped 160
    "Mixed_6c/Branch_2/Conv2d_0c_1x7": (1, 7, 160, 144),
    "Mixed_6c/Branch_2/Conv2d_0d_7x1": (7, 1, 144, 144),
    "Mixed_6c/Branch_2/Conv2d_0e_1x7": (1, 7, 144, 144),
    "Mixed_6c/Branch_3/Conv2d_0b_1x1": (1, 1, 512, 144),
    # Mixed_6d: input 576, cap 144, output 576.
    "Mixed_6d/Branch_0/Conv2d_0a_1x1": (1, 1, 576, 144),
    "Mixed_6d/Branch_1/Conv2d_0a_1x1": (1, 1, 576, 144),
    "Mixed_6d/Branch_1/Conv2d_0b_1x7": (1, 7, 144, 144),
    "Mixed_6d/Branch_1/Conv2d_0c_7x1": (7, 1, 144, 144),
    "Mixed_6d/Branch_2/Conv2d_0a_1x1": (1, 1, 576, 144),
    "Mixed_6d/Branch_2/Conv2d_0b_7x1": (7, 1, 144, 144),
    "Mixed_6d/Branch_2/Conv2d_0c_1x7": (1, 7, 144, 144),
    "Mixed_6d/Branch_2/Conv2d_0d_7x1": (7, 1, 144, 144),
    "Mixed_6d/Branch_2/Conv2d_0e_1x7": (1, 7, 144, 144),
    "Mixed_6d/Branch_3/Conv2d_0b_1x1": (1, 1, 576, 144),
    # Mixed_6e: input 576, cap 96, output 384.
    "Mixed_6e/Branch_0/Conv2d_0a_1x1": (1, 1, 576, 96),
    "Mixed_6e/Branch_1/Conv2d_0a_1x1": (1, 1, 576, 96),
    "Mixed_6e/Branch_1/Conv2d_0b_1x7": (1, 7, 96, 96),
    "Mixed_6e/Branch_1/Conv2d_0c_7x1": (7, 1, 96, 96),
    "Mixed_6e/Branch_2/Conv2d_0a_1x1": (1, 1, 576, 192),  # checkpoint: uncapped 192
    "Mixed_6e/Branch_2/Conv2d_0b_7x1": (7, 1, 192, 96),
    "Mixed_6e/Branch_2/Conv2d_0c_1x7": (1, 7, 96, 96),
    "Mixed_6e/Branch_2/Conv2d_0d_7x1": (7, 1, 96, 96),
    "Mixed_6e/Branch_2/Conv2d_0e_1x7": (1, 7, 96, 96),
    "Mixed_6e/Branch_3/Conv2d_0b_1x1": (1, 1, 576, 96),
    # Mixed_7a: input 384, cap 96, output 96 + 96 + 384 (max pool) = 576.
    "Mixed_7a/Branch_0/Conv2d_0a_1x1": (1, 1, 384, 96),
    "Mixed_7a/Branch_0/Conv2d_1a_3x3": (3, 3, 96, 96),
    "Mixed_7a/Branch_1/Conv2d_0a_1x1": (1, 1, 384, 96),
    "Mixed_7a/Branch_1/Conv2d_0b_1x7": (1, 7, 96, 96),
    "Mixed_7a/Branch_1/Conv2d_0c_7x1": (7, 1, 96, 96),
    "Mixed_7a/Branch_1/Conv2d_1a_3x3": (3, 3, 96, 96),
    # Mixed_7b: input 576, cap 192, output 192 + 384 + 384 + 96 = 1056.
    "Mixed_7b/Branch_0/Conv2d_0a_1x1": (1, 1, 576, 192),
    "Mixed_7b/Branch_1/Conv2d_0a_1x1": (1, 1, 576, 192),
    "Mixed_7b/Branch_1/Conv2d_0b_1x3": (1, 3, 192, 192),
    "Mixed_7b/Branch_1/Conv2d_0b_3x1": (3, 1, 192, 192),
    "Mixed_7b/Branch_2/Conv2d_0a_1x1": (1, 1, 576, 192),
    "Mixed_7b/Branch_2/Conv2d_0b_3x3": (3, 3, 192, 192),
    "Mixed_7b/Branch_2/Conv2d_0c_1x3": (1, 3, 192, 192),
    "Mixed_7b/Branch_2/Conv2d_0d_3x1": (3, 1, 192, 192),
    "Mixed_7b/Branch_3/Conv2d_0b_1x1": (1, 1, 576, 96),  # checkpoint: 96, cap gives 192
    # Mixed_7c: input 1056, cap 192, output 1056; slim names Branch_1's 3x1 "0c".
    "Mixed_7c/Branch_0/Conv2d_0a_1x1": (1, 1, 1056, 192),
    "Mixed_7c/Branch_1/Conv2d_0a_1x1": (1, 1, 1056, 192),
    "Mixed_7c/Branch_1/Conv2d_0b_1x3": (1, 3, 192, 192),
    "Mixed_7c/Branch_1/Conv2d_0c_3x1": (3, 1, 192, 192),
    "Mixed_7c/Branch_2/Conv2d_0a_1x1": (1, 1, 1056, 192),
    "Mixed_7c/Branch_2/Conv2d_0b_3x3": (3, 3, 192, 192),
    "Mixed_7c/Branch_2/Conv2d_0c_1x3": (1, 3, 192, 192),
    "Mixed_7c/Branch_2/Conv2d_0d_3x1": (3, 1, 192, 192),
    "Mixed_7c/Branch_3/Conv2d_0b_1x1": (1, 1, 1056, 96),  # checkpoint: 96, cap gives 192
}
LOGITS_KERNEL = (1, 1, 1056, NUM_CLASSES)

# The sum below, over PAPER_CONVS, written down so a change to the table shows too.
PAPER_PARAMETERS = 8_964_068


def expected_parameters() -> tuple[int, int]:
    """(all, trainable) parameters of the paper preset, from the table alone.

    A conv layer holds its kernel; its batch norm (no scale) a trainable beta and two
    non-trainable moving statistics per filter; the logits layer a kernel and a bias.
    """
    kernels = sum(kh * kw * cin * cout for kh, kw, cin, cout in PAPER_CONVS.values())
    filters = sum(cout for *_, cout in PAPER_CONVS.values())
    logits = int(np.prod(LOGITS_KERNEL)) + NUM_CLASSES
    return kernels + 3 * filters + logits, kernels + filters + logits


@pytest.fixture(scope="module")
def paper_model() -> tf.keras.Model:
    return inception.build_model(PAPER)


@pytest.fixture(scope="module")
def paper_end_points(paper_model: tf.keras.Model) -> dict[str, tf.Tensor]:
    return inception.end_points(paper_model)


@pytest.mark.parametrize("name", list(PAPER_CHANNELS))
def test_paper_end_point_channels_match_released_checkpoint(
    paper_end_points: dict[str, tf.Tensor], name: str
) -> None:
    assert paper_end_points[name].shape[-1] == PAPER_CHANNELS[name]


def test_paper_end_points_are_slims_in_order(paper_end_points: dict[str, tf.Tensor]) -> None:
    assert list(paper_end_points) == list(PAPER_CHANNELS)


def test_paper_final_map_is_8x8_and_pooled_whole(
    paper_model: tf.keras.Model, paper_end_points: dict[str, tf.Tensor]
) -> None:
    assert tuple(paper_end_points["Mixed_7c"].shape[1:3]) == (8, 8)
    # The stem conv brings 599 down to the 299 stock Inception-v3 starts from.
    assert tuple(paper_end_points["Conv2d_0a_3x3"].shape[1:3]) == (299, 299)
    pool = paper_model.get_layer("Logits/AvgPool_1a_8x8")
    assert tuple(pool.pool_size) == (8, 8)
    assert tuple(pool.output.shape[1:3]) == (1, 1)


def test_paper_convolutions_match_table(paper_model: tf.keras.Model) -> None:
    convs = {
        layer.name: tuple(layer.kernel.shape)
        for layer in paper_model.layers
        if isinstance(layer, tf.keras.layers.Conv2D)
    }
    logits = convs.pop("Logits/Conv2d_1c_1x1")
    assert logits == LOGITS_KERNEL
    assert convs == PAPER_CONVS


def test_paper_parameter_count_matches_table(paper_model: tf.keras.Model) -> None:
    total, trainable = expected_parameters()
    assert total == PAPER_PARAMETERS
    assert paper_model.count_params() == total
    assert sum(int(np.prod(v.shape)) for v in paper_model.trainable_variables) == trainable


def test_conv_layers_are_slims_conv_bn_relu(paper_model: tf.keras.Model) -> None:
    for scope in PAPER_CONVS:
        conv = paper_model.get_layer(scope)
        norm = paper_model.get_layer(f"{scope}/BatchNorm")
        assert not conv.use_bias
        assert norm.epsilon == pytest.approx(0.001)
        assert not norm.scale and norm.center
        assert isinstance(paper_model.get_layer(f"{scope}/Relu"), tf.keras.layers.ReLU)


def test_stem_uses_valid_padding_as_slim(paper_model: tf.keras.Model) -> None:
    paddings = {
        name: paper_model.get_layer(name).padding
        for name in ("Conv2d_0a_3x3", "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3")
    }
    assert paddings == {
        "Conv2d_0a_3x3": "valid",
        "Conv2d_1a_3x3": "valid",
        "Conv2d_2a_3x3": "valid",
        "Conv2d_2b_3x3": "same",
    }


def test_paper_has_no_dropout_and_no_auxiliary_head(paper_model: tf.keras.Model) -> None:
    assert not [
        layer.name
        for layer in paper_model.layers
        if isinstance(layer, tf.keras.layers.Dropout) or "AuxLogits" in layer.name
    ]
    assert len(paper_model.outputs) == 1


def test_paper_forward_pass_gives_logits_per_image(paper_model: tf.keras.Model) -> None:
    images = tf.random.uniform((2, 599, 599, 3), -1.0, 1.0, seed=1)
    logits = paper_model(images, training=False)
    assert logits.shape == (2, NUM_CLASSES)
    assert np.isfinite(logits.numpy()).all()


def test_caps_alone_do_not_give_the_checkpoint_widths() -> None:
    """Table 3 read literally leaves Mixed_6a and the 7b/7c pooling branches stock."""
    assert PAPER_TABLE3.depth("Mixed_6a/Branch_0/Conv2d_1a_1x1", 384) == 384
    assert PAPER_TABLE3.depth("Mixed_7b/Branch_3/Conv2d_0b_1x1", 192) == 192
    assert PAPER.depth("Mixed_6a/Branch_0/Conv2d_1a_1x1", 384) == 256
    assert PAPER.depth("Mixed_7b/Branch_3/Conv2d_0b_1x1", 192) == 96


def test_depth_applies_cap_then_width_multiplier_and_floor() -> None:
    # Mixed_6b caps 192 at 128; an eighth of that is 16; the floor of 8 does not bind.
    assert PAPER.depth("Mixed_6b/Branch_0/Conv2d_0a_1x1", 192) == 128
    assert TINY.depth("Mixed_6b/Branch_0/Conv2d_0a_1x1", 192) == 16
    # Uncapped layer: 48 / 8 = 6, raised to min_depth 8.
    assert TINY.depth("Mixed_5b/Branch_1/Conv2d_0a_1x1", 48) == 8
    # Overrides take precedence over the cap and scale too.
    assert TINY.depth("Mixed_6e/Branch_2/Conv2d_0a_1x1", 192) == 24


@pytest.mark.slow
@pytest.mark.parametrize("config", [TINY, DEMO], ids=["tiny", "demo"])
def test_small_presets_run_forward(config: ModelConfig) -> None:
    model = inception.build_model(config)
    images = tf.random.uniform((2, config.input_size, config.input_size, 3), -1.0, 1.0)
    logits = model(images, training=False)
    assert logits.shape == (2, NUM_CLASSES)
    assert np.isfinite(logits.numpy()).all()
    points = inception.end_points(model)
    assert points["Mixed_7c"].shape[1] == config.final_map_size
    assert ("Conv2d_0a_3x3" in points) == config.stem_conv


@pytest.mark.slow
def test_every_trainable_variable_gets_a_gradient() -> None:
    """One training step reaches every layer: nothing is cut off from the loss."""
    model = inception.build_model(TINY)
    images = tf.random.uniform((4, TINY.input_size, TINY.input_size, 3), -1.0, 1.0, seed=2)
    labels = tf.constant([0, 1, 2, 3])
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )
    gradients = tape.gradient(loss, model.trainable_variables)
    dead = [
        variable.name
        for variable, gradient in zip(model.trainable_variables, gradients, strict=True)
        if gradient is None or not np.any(gradient.numpy())
    ]
    assert not dead
    # Training-mode batch norm moved the moving statistics towards the batch's.
    moving_means = [v for v in model.non_trainable_variables if "moving_mean" in v.name]
    assert any(np.any(v.numpy()) for v in moving_means)


def test_weight_decay_matches_slims_l2_loss() -> None:
    model = inception.build_model(TINY)
    kernels = [layer.kernel for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    # slim: weight_decay * tf.nn.l2_loss(w) = weight_decay * sum(w ** 2) / 2 per kernel.
    expected = sum(TINY.weight_decay * float(tf.reduce_sum(k**2)) / 2 for k in kernels)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_savedmodel_round_trip_keeps_outputs(tmp_path) -> None:
    model = inception.build_model(TINY)
    images = tf.random.uniform((3, TINY.input_size, TINY.input_size, 3), -1.0, 1.0)
    # Slim's scope names contain "/"; the model must still save and rebuild from its
    # config. (Without save_traces=False the save also works but takes a minute here.)
    model.save(tmp_path / "model", save_format="tf", save_traces=False)
    restored = tf.keras.models.load_model(tmp_path / "model", compile=False)
    assert restored.get_layer("Mixed_6a/Branch_0/Conv2d_1a_1x1").filters == 32
    np.testing.assert_allclose(
        restored(images, training=False), model(images, training=False), rtol=1e-5, atol=1e-5
    )


def test_config_rejects_inputs_the_network_cannot_take() -> None:
    with pytest.raises(ValueError, match="at least 151"):
        ModelConfig(input_size=150, stem_conv=True)
    with pytest.raises(ValueError, match="at least 75"):
        ModelConfig(input_size=74, stem_conv=False)
    ModelConfig(input_size=151, stem_conv=True)
    assert inception.final_map_size(599, stem_conv=True) == 8
    assert inception.final_map_size(299, stem_conv=False) == 8


def test_config_rejects_unknown_layer_names() -> None:
    with pytest.raises(ValueError, match="Mixed_8a"):
        ModelConfig(input_size=75, stem_conv=False, depth_caps={"Mixed_8a": 10})
    typo = dataclasses.replace(TINY, depth_overrides={"Mixed_6a/Branch_0/Conv2d_1a_3x3": 8})
    with pytest.raises(ValueError, match="Conv2d_1a_3x3"):
        inception.build_model(typo)


def test_presets_are_read_only() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAPER.input_size = 299  # type: ignore[misc]
    with pytest.raises(TypeError):
        PAPER.depth_caps["Mixed_6b"] = 1  # type: ignore[index]


def test_presets_load_without_tensorflow() -> None:
    """The command line lists the presets before any work starts, without TensorFlow."""
    import subprocess
    import sys

    code = (
        "import sys; from pipeline.config import PRESET_NAMES, PRESETS; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
        "print(','.join(PRESET_NAMES), "
        "*(PRESETS[n].training.model_config.input_size for n in PRESET_NAMES))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tiny,demo,paper,finetune", "75", "195", "599", "599"]
