"""Crystal heatmaps (``marco explain``): SmoothGrad on models whose answer is known.

The quick tests use a detector built by hand: its crystals logit is the brightest
5x5 window's mean brightness above a threshold, so only the pixels of a bright square
can move it, and the heatmap must sit on the square. The slow ones train a small
network to find the square, and run the command on an exported model.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from components.names import CLASS_IDS
from components.tools.explain import CSV_NAME, locate
from components.tools.explain.run import (
    ExplainOptions,
    explain_paths,
    output_stems,
)
from components.tools.explain.smoothgrad import PixelModel, SmoothGrad, SmoothGradSettings
from pipeline.cli import main

SIZE = 32  # the test networks' input side
SQUARE = 6  # side of the bright square, in network pixels
CRYSTALS = CLASS_IDS["crystals"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def scene(rng: np.random.Generator, top: int | None = None, left: int | None = None,
          size: int = SIZE, square: int = SQUARE) -> np.ndarray:
    """A dim noisy drop, values in [0, 1], with a bright square at (top, left) if given."""
    image = rng.normal(0.35, 0.05, (size, size, 3))
    if top is not None and left is not None:
        image[top:top + square, left:left + square] = 0.95
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def prepared(image: np.ndarray) -> np.ndarray:
    """An image in [0, 1] as the network takes it, in [-1, 1]."""
    return image * 2.0 - 1.0


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def square_detector(size: int = SIZE):
    """Crystals logit = 4 x relu(brightest 5x5 window's mean - 0.5); clear's is 1."""
    import tensorflow as tf

    images = tf.keras.Input((size, size, 3), name="images")
    window = tf.keras.layers.Conv2D(
        1, 5, padding="valid", activation="relu",
        kernel_initializer=tf.keras.initializers.Constant(1.0 / 75.0),
        bias_initializer=tf.keras.initializers.Constant(-0.5))(images)
    brightest = tf.keras.layers.GlobalMaxPooling2D()(window)
    logits = tf.keras.layers.Dense(
        4, kernel_initializer=tf.keras.initializers.Constant([[0.0, 4.0, 0.0, 0.0]]),
        bias_initializer=tf.keras.initializers.Constant([1.0, 0.0, 0.0, 0.0]))(brightest)
    return tf.keras.Model(images, logits, name="square_detector")


def random_network(size: int = SIZE):
    """A small network with seeded random weights and smooth gradients everywhere."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(7)
    images = tf.keras.Input((size, size, 3), name="images")
    hidden = tf.keras.layers.Conv2D(6, 3, activation="tanh")(images)
    hidden = tf.keras.layers.Conv2D(6, 3, strides=2, activation="tanh")(hidden)
    hidden = tf.keras.layers.GlobalAveragePooling2D()(hidden)
    return tf.keras.Model(images, tf.keras.layers.Dense(4)(hidden), name="random_network")


@pytest.fixture(scope="module")
def detector() -> SmoothGrad:
    return SmoothGrad(PixelModel.from_keras(square_detector()),
                      SmoothGradSettings(samples=8, batch_size=4))


def inside(value: float, start: float, side: float) -> bool:
    return start <= value <= start + side


# ----------------------------------------------------------------------------- SmoothGrad


@pytest.mark.parametrize(("top", "left"), [(3, 20), (20, 4), (13, 13), (24, 24)])
def test_heatmap_peak_falls_inside_the_bright_square(detector, top, left):
    rng = np.random.default_rng(top * 100 + left)
    explanation = detector.explain_prepared(prepared(scene(rng, top, left)), CRYSTALS)
    heat = explanation.saliency
    assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    assert top <= row < top + SQUARE and left <= col < left + SQUARE
    # Only the square can move the score: (nearly) all the heat is on it.
    assert heat[top:top + SQUARE, left:left + SQUARE].sum() > 0.95 * heat.sum()
    assert explanation.class_name == "crystals"
    assert explanation.probabilities[CRYSTALS] > 0.5


def test_the_located_region_is_the_square(detector):
    rng = np.random.default_rng(5)
    top, left = 9, 17
    explanation = detector.explain_prepared(prepared(scene(rng, top, left)), CRYSTALS)
    region = locate.hottest_region(explanation.saliency)
    assert inside(region.x, left, SQUARE) and inside(region.y, top, SQUARE)
    assert 1.0 <= region.radius <= SQUARE


def test_heatmaps_are_deterministic_under_a_seed():
    import tensorflow as tf

    model = PixelModel.from_keras(random_network())
    image = prepared(scene(np.random.default_rng(0), 10, 10))

    def heat(**settings) -> np.ndarray:
        return SmoothGrad(model, SmoothGradSettings(samples=6, **settings)).explain_prepared(
            image, CRYSTALS).saliency

    smoothgrad = SmoothGrad(model, SmoothGradSettings(samples=6, seed=3, batch_size=4))
    first = smoothgrad.explain_prepared(image, CRYSTALS).saliency
    # Again with the same object, then with a new one under another global seed.
    assert np.array_equal(first, smoothgrad.explain_prepared(image, CRYSTALS).saliency)
    tf.random.set_seed(1234)
    assert np.array_equal(first, heat(seed=3, batch_size=4))
    # Sample k's noise depends on the seed and k only, not on how samples are batched.
    np.testing.assert_allclose(first, heat(seed=3, batch_size=1), rtol=1e-4, atol=1e-7)
    assert not np.allclose(first, heat(seed=4, batch_size=4), rtol=1e-3)


def test_predicted_class_and_settings_are_checked(detector):
    rng = np.random.default_rng(1)
    plain = detector.explain_prepared(prepared(scene(rng)), None)
    assert plain.class_name == "clear"  # no square: the detector's crystals logit is 0
    with_square = detector.explain_prepared(prepared(scene(rng, 4, 4)), None)
    assert with_square.class_name == "crystals"
    with pytest.raises(ValueError, match=r"takes \[32, 32, 3\]"):
        detector.explain_prepared(np.zeros((16, 16, 3), np.float32), CRYSTALS)
    for bad in ({"samples": 0}, {"batch_size": 0}, {"noise": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SmoothGradSettings(**bad)
    with pytest.raises(ValueError, match="unknown class 'crystal'"):
        ExplainOptions(class_name="crystal")


# ----------------------------------------------------------------------------- locating


def test_hottest_region_of_a_disc_and_of_a_flat_map():
    rows, cols = np.indices((60, 80))
    heat = np.where(np.hypot(cols + 0.5 - 50.0, rows + 0.5 - 20.0) <= 8.0, 1.0, 0.0)
    heat += 0.3 * np.where(np.hypot(cols + 0.5 - 15.0, rows + 0.5 - 45.0) <= 5.0, 1.0, 0.0)
    region = locate.hottest_region(heat)
    assert abs(region.x - 50.0) < 0.5 and abs(region.y - 20.0) < 0.5
    assert abs(region.radius - 8.0) < 1.0
    assert locate.hottest_region(np.full((10, 10), 0.25)) is None


def test_regions_map_back_through_the_centre_crop():
    region = locate.Region(30.0, 15.0, 2.0)
    # Landscape 640x480: the network saw columns 80..560, at 60 px, 8 source px each.
    assert locate.to_source_pixels(region, 60, (480, 640)) == locate.Region(320.0, 120.0, 16.0)
    # Portrait 300x200: rows 50..250, at 100 px, 2 source px each.
    assert locate.to_source_pixels(region, 100, (300, 200)) == locate.Region(60.0, 80.0, 4.0)


# ----------------------------------------------------------------------------- files


def test_output_names_follow_the_image_names():
    assert output_stems(["/d/plates/P1/A01.jpg", "/d/plates/P2/A01.jpg", "/d/plates/B2.png"]) == {
        "/d/plates/P1/A01.jpg": "P1/A01", "/d/plates/P2/A01.jpg": "P2/A01",
        "/d/plates/B2.png": "B2"}
    assert output_stems(["/d/x/GSK_A01_2014.jpg"]) == {"/d/x/GSK_A01_2014.jpg": "GSK_A01_2014"}
    assert output_stems(["gs://b/p/a.jpg", "gs://b/p/q/c.jpg"]) == {
        "gs://b/p/a.jpg": "a", "gs://b/p/q/c.jpg": "q/c"}


@pytest.fixture(scope="module")
def drop_files(tmp_path_factory) -> dict[str, Path]:
    """Drop images of 64x48 (not square) with the square at known source pixels, and bad files.

    The network sees the centre 48x48 (columns 8..56) resized to 32: 1.5 source pixels
    per network pixel. The square is 9 source pixels, 6 network pixels.
    """
    root = tmp_path_factory.mktemp("drops")
    rng = np.random.default_rng(11)
    files = {}
    for name, (top, left) in {"P1/A01": (6, 14), "P1/A02": (30, 40), "P2/A01": (20, 20)}.items():
        image = np.clip(rng.normal(0.35, 0.05, (48, 64, 3)), 0, 1)
        image[top:top + 9, left:left + 9] = 0.95
        path = root / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png(image.astype(np.float32)))
        files[name] = path
    (root / "P2" / "A02.jpg").write_bytes(b"this is not a JPEG")
    (root / "P2" / "A03.png").write_bytes(b"")
    (root / "P2" / "A04.png").write_bytes(png(scene(rng)))
    files.update({"P2/A02": root / "P2" / "A02.jpg", "P2/A03": root / "P2" / "A03.png",
                  "P2/A04": root / "P2" / "A04.png", "gone": root / "P2" / "A05.png"})
    return files


SQUARES = {"P1/A01": (6, 14), "P1/A02": (30, 40), "P2/A01": (20, 20)}


def test_files_csv_and_located_squares(detector, drop_files, tmp_path):
    paths = sorted(str(p) for p in drop_files.values())
    options = ExplainOptions(locate=True)
    rows = explain_paths(paths, detector, tmp_path, options)
    assert [row.path for row in rows] == paths
    table = read_csv(tmp_path / CSV_NAME)
    assert list(table[0]) == ["path", "class", "probability", "heatmap", "overlay",
                              "x", "y", "radius", "error"]
    by_path = {row["path"]: row for row in table}
    assert set(by_path) == set(paths)  # one row per image, bad ones included
    for name, (top, left) in SQUARES.items():
        row = by_path[str(drop_files[name])]
        assert row["error"] == "" and row["class"] == "crystals"
        assert float(row["probability"]) > 0.5
        # The located centre, in the source image's pixels, is on the square.
        assert inside(float(row["x"]), left, 9) and inside(float(row["y"]), top, 9), row
        assert 1.5 <= float(row["radius"]) <= 9
        assert row["overlay"] == f"{name}.heatmap.png" and row["heatmap"] == f"{name}.heatmap.npy"
        heat = np.load(tmp_path / row["heatmap"])
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        with Image.open(tmp_path / row["overlay"]) as overlay:
            assert overlay.size == (SIZE, SIZE) and overlay.mode == "RGB"
    errors = {name: by_path[str(drop_files[name])]["error"]
              for name in ("P2/A02", "P2/A03", "gone")}
    assert "Unknown image file format" in errors["P2/A02"]
    assert errors["P2/A03"] == "empty file"
    assert errors["gone"].startswith("cannot read the file")
    assert [bool(row["error"]) for row in table] == sorted(bool(row["error"]) for row in table)
    assert not (tmp_path / "P2" / "A02.heatmap.png").exists()
    # A drop without a square: found nothing bright, the crystals heat is flat (zero).
    no_square = by_path[str(drop_files["P2/A04"])]
    assert no_square["error"] == "" and float(no_square["probability"]) < 0.5


def test_without_locate_no_region_columns(detector, drop_files, tmp_path):
    explain_paths([str(drop_files["P1/A01"])], detector, tmp_path, ExplainOptions())
    [row] = read_csv(tmp_path / CSV_NAME)
    assert list(row) == ["path", "class", "probability", "heatmap", "overlay", "error"]
    assert row["overlay"] == "A01.heatmap.png" and (tmp_path / "A01.heatmap.png").is_file()


def test_two_images_with_one_output_name_are_both_listed(detector, tmp_path):
    rng = np.random.default_rng(2)
    for name in ("A01.png", "A01.bmp"):
        Image.open(io.BytesIO(png(scene(rng, 5, 5)))).save(tmp_path / name)
    paths = [str(tmp_path / "A01.bmp"), str(tmp_path / "A01.png")]
    rows = explain_paths(paths, detector, tmp_path / "out", ExplainOptions())
    assert rows[0].error == ""
    assert "A01.bmp already has the output name A01.heatmap.png" in rows[1].error


def test_command_line_refuses_missing_inputs_and_models(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["explain", str(tmp_path / "nope.jpg"), "--model",
                                   str(tmp_path), "--out", str(tmp_path / "out")])
    assert missing.exit_code == 1 and "nope.jpg: no such file or folder" in missing.output
    assert not (tmp_path / "out").exists()
    (tmp_path / "a.png").write_bytes(png(scene(np.random.default_rng(0))))
    no_model = runner.invoke(main, ["explain", str(tmp_path / "a.png"), "--model",
                                    str(tmp_path), "--out", str(tmp_path / "out")])
    assert no_model.exit_code == 1 and "not a SavedModel" in no_model.output
    bad_class = runner.invoke(main, ["explain", str(tmp_path / "a.png"), "--model",
                                     str(tmp_path), "--out", str(tmp_path), "--class", "xtal"])
    assert bad_class.exit_code == 2 and "xtal" in bad_class.output


def test_a_saved_model_without_the_network_is_refused_by_name(tmp_path):
    """Signatures alone (image bytes in) cannot be differentiated: the command says so."""
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf.function(lambda image_bytes: {"scores": tf.strings.length(image_bytes)},
                               input_signature=[tf.TensorSpec([None], tf.string)])
    tf.saved_model.save(module, str(tmp_path / "bytes-only"),
                        signatures={"serving_default": module.serve})
    (tmp_path / "a.png").write_bytes(png(scene(np.random.default_rng(0))))
    result = CliRunner().invoke(main, ["explain", str(tmp_path / "a.png"), "--model",
                                       str(tmp_path / "bytes-only"), "--out",
                                       str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'bytes-only'}: the SavedModel has no Keras call function" in result.output


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_a_trained_network_looks_at_the_square():
    """A small network trained (about 3 s) to tell drops with a bright square from drops
    without: wherever the square is, its heatmap's peak is on it."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    count = 1024
    positions = rng.integers(2, SIZE - SQUARE - 2, (count, 2))
    images = np.stack([prepared(scene(rng, *positions[i]) if i % 2 else scene(rng))
                       for i in range(count)])
    labels = np.array([CRYSTALS if i % 2 else CLASS_IDS["clear"] for i in range(count)])
    inputs = tf.keras.Input((SIZE, SIZE, 3), name="images")
    hidden = tf.keras.layers.Conv2D(8, 5, padding="same", activation="relu")(inputs)
    hidden = tf.keras.layers.GlobalMaxPooling2D()(hidden)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(4)(hidden))
    model.compile(tf.keras.optimizers.Adam(0.01),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(images, labels, batch_size=64, epochs=3, verbose=0)
    assert history.history["accuracy"][-1] > 0.95

    smoothgrad = SmoothGrad(PixelModel.from_keras(model), SmoothGradSettings(samples=16))
    test_rng = np.random.default_rng(1)
    for top, left in test_rng.integers(2, SIZE - SQUARE - 2, (8, 2)):
        explanation = smoothgrad.explain_prepared(prepared(scene(test_rng, top, left)), CRYSTALS)
        assert explanation.probabilities[CRYSTALS] > 0.9
        row, col = np.unravel_index(np.argmax(explanation.saliency), (SIZE, SIZE))
        assert top <= row < top + SQUARE and left <= col < left + SQUARE, (top, left, row, col)
        region = locate.hottest_region(explanation.saliency)
        assert inside(region.x, left, SQUARE) and inside(region.y, top, SQUARE)


@pytest.mark.slow
def test_marco_explain_on_an_exported_model(drop_files, tmp_path):
    """The command on a SavedModel as the pipeline exports it (serving-folder layout)."""
    from components.trainer.export import export_model

    keras_model = square_detector()
    export_model(keras_model, str(tmp_path / "serving" / "5"))
    out = tmp_path / "heat"
    arguments = ["explain", str(drop_files["P1/A01"].parent), str(drop_files["P2/A02"]),
                 "--model", str(tmp_path / "serving"), "--out", str(out), "--locate",
                 "--samples", "8", "--batch-size", "3", "--seed", "9", "--quiet"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert "explained 2 of 3 images" in result.output and "version 5" in result.output
    assert "not explained: 1" in result.output
    table = read_csv(out / CSV_NAME)
    assert [row["overlay"] for row in table] == ["P1/A01.heatmap.png", "P1/A02.heatmap.png", ""]
    assert table[-1]["path"] == str(drop_files["P2/A02"]) and table[-1]["error"]
    top, left = SQUARES["P1/A01"]
    assert inside(float(table[0]["x"]), left, 9) and inside(float(table[0]["y"]), top, 9)
    # The exported network gives the heatmap the Keras model gives, with the same seed.
    reference = SmoothGrad(PixelModel.from_keras(keras_model),
                           SmoothGradSettings(samples=8, batch_size=3, seed=9))
    expected = reference.explain(drop_files["P1/A01"].read_bytes(), CRYSTALS).saliency
    np.testing.assert_allclose(np.load(out / "P1/A01.heatmap.npy"), expected, rtol=1e-5,
                               atol=1e-8)
    # Run again: the same files, byte for byte.
    first = (out / "P1/A01.heatmap.png").read_bytes(), (out / "P1/A01.heatmap.npy").read_bytes()
    assert CliRunner().invoke(main, arguments).exit_code == 0
    assert first == ((out / "P1/A01.heatmap.png").read_bytes(),
                     (out / "P1/A01.heatmap.npy").read_bytes())
