"""The released MARCO model: scored as it is, and its weights imported into the paper network.

The released serving graph and its variable index are kept beside the project
(``../shared/released-marco/``, without the weights). A released-format SavedModel
with random weights is built from them once per session
(:func:`components.tools.released.randomised.save_with_random_weights`); the real
photographs are ``../shared/real-drops/``. Tests skip, saying why, where either is
absent.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from components.names import CLASS_NAMES
from tests.conftest import REAL_DROPS, REPO_ROOT

RELEASED_SOURCE = REPO_ROOT.parent / "shared" / "released-marco"
PAPER_TENSORS = 382
PAPER_VALUES = 8_964_068
PARITY = 1e-4
SIGNATURES = {"serving_default", "probabilities", "serving_examples", "transform_features"}


@pytest.fixture(scope="session")
def released_source() -> Path:
    """The released model's graph and variable index (no weights)."""
    if not (RELEASED_SOURCE / "saved_model.pb").is_file() or not (
        RELEASED_SOURCE / "variables" / "variables.index"
    ).is_file():
        pytest.skip(f"the released MARCO graph and variable index are not at {RELEASED_SOURCE}")
    return RELEASED_SOURCE


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    found = sorted(REAL_DROPS.glob("*.jpeg"))
    if len(found) < 12:
        pytest.skip(f"the twelve real MARCO photographs are not at {REAL_DROPS}")
    return found


@pytest.fixture(scope="session")
def released_model(released_source: Path, tmp_path_factory) -> Path:
    """The released graph saved with random weights (about 10 s, once per session)."""
    from components.tools.released.randomised import save_with_random_weights

    out = tmp_path_factory.mktemp("released") / "savedmodel"
    return Path(save_with_random_weights(str(released_source), str(out), seed=7))


@pytest.fixture(scope="session")
def imported(released_model: Path, tmp_path_factory):
    """``released_model`` imported into a new serving folder (about two minutes)."""
    from components.tools.released.importer import import_released

    serving = tmp_path_factory.mktemp("imported") / "serving"
    return import_released(str(released_model), str(serving))


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def probabilities_of(row: dict[str, str]) -> list[float]:
    return [float(row[name]) for name in CLASS_NAMES]


# ----------------------------------------------------------------------------- the graph


def test_the_released_graph_is_recognised(released_source: Path) -> None:
    from components.tools.released.graph import read_released
    from components.tools.scoring.model import RELEASED_MODEL, model_kind

    graph = read_released(str(released_source))
    assert graph.class_names == ("Clear", "Crystals", "Other", "Precipitate")
    assert graph.class_order == (0, 1, 2, 3)
    assert graph.input_size == 599
    assert graph.image_input == "ParseExample/ParseExample:0"
    assert model_kind(str(released_source)) == RELEASED_MODEL


def test_a_model_that_is_neither_kind_is_refused_naming_both(released_source, tmp_path) -> None:
    from components.tools.released.graph import read_saved_model
    from components.tools.scoring.model import ModelNotFound, model_kind

    saved = read_saved_model(str(released_source))
    graph = saved.meta_graphs[0]
    kept = [n for n in graph.graph_def.node if n.name != "index_to_string/table_init"]
    del graph.graph_def.node[:]
    graph.graph_def.node.extend(kept)
    (tmp_path / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(ModelNotFound, match="no 'probabilities' signature.*not the released "
                                            "MARCO model either.*class-name table"):
        model_kind(str(tmp_path))


@pytest.mark.slow
def test_serving_preprocessing_equals_the_released_graphs(released_model, photos) -> None:
    """eval_preprocess gives the network what the released graph's own preprocessing does."""
    import tensorflow as tf

    from components.model import preprocessing
    from components.tools.released.model import ReleasedModel

    model = ReleasedModel(str(released_model))
    info = model.graph_info
    images = [p.read_bytes() for p in photos[:4]]
    theirs = model._session.run(info.network_input,
                                {info.image_input: np.array(images, dtype=object)})
    ours = np.stack([preprocessing.eval_preprocess(tf.constant(b), info.input_size).numpy()
                     for b in images])
    assert theirs.shape == ours.shape == (4, 599, 599, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- scoring


def _awkward_folder(root: Path, photos: list[Path]) -> dict[str, Path]:
    """Three photographs as JPEG, the first again as PNG, TIFF and BMP, and a broken file."""
    import tensorflow as tf
    from PIL import Image

    root.mkdir()
    files = {}
    for photo in photos[:3]:
        files[photo.name] = root / photo.name
        shutil.copy(photo, files[photo.name])
    # Decoded as the released graph decodes it (DecodeJpeg, default DCT method).
    pixels = Image.fromarray(tf.io.decode_jpeg(photos[0].read_bytes(), channels=3).numpy())
    for fmt, suffix in (("PNG", "png"), ("TIFF", "tif"), ("BMP", "bmp")):
        path = root / f"{photos[0].stem}-as.{suffix}"
        pixels.save(path, format=fmt)
        files[suffix] = path
    broken = root / "PLATE9_A01_broken.jpg"
    broken.write_bytes(photos[1].read_bytes()[:2000])
    files["broken"] = broken
    return files


@pytest.mark.slow
def test_score_a_folder_with_the_released_model(released_model, photos, tmp_path) -> None:
    from components.tools.released.model import ReleasedModel
    from pipeline.cli import main

    files = _awkward_folder(tmp_path / "plate", photos)
    model = ReleasedModel(str(released_model))
    jpegs = [files[p.name] for p in photos[:3]]
    direct = model.run_jpeg([p.read_bytes() for p in jpegs])
    # Half way between the lowest two crystal probabilities: the other two are hits.
    low = np.sort(direct[:, 1])
    threshold = float((low[0] + low[1]) / 2)
    out = tmp_path / "results.csv"
    result = CliRunner().invoke(main, [
        "score", str(tmp_path / "plate"), "--model", str(released_model), "--out", str(out),
        "--hits", str(tmp_path / "hits"), "--hits-threshold", str(threshold), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    assert "with the released MARCO model (TF1 SavedModel)" in result.output
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert len(rows) == len(files)
    # The JPEGs went through the released graph as it is.
    for path, expected in zip(jpegs, direct, strict=True):
        row = rows[path.name]
        assert row["error"] == ""
        np.testing.assert_allclose(probabilities_of(row), expected, atol=1e-6)
        assert row["predicted_class"] == CLASS_NAMES[int(np.argmax(expected))]
    # The same pixels as PNG, TIFF and BMP get the JPEG's probabilities.
    for suffix in ("png", "tif", "bmp"):
        row = rows[files[suffix].name]
        assert row["error"] == "", (suffix, row["error"])
        np.testing.assert_allclose(probabilities_of(row), direct[0], atol=1e-5, err_msg=suffix)
    broken = rows[files["broken"].name]
    assert broken["predicted_class"] == "" and "JPEG" in broken["error"]
    assert (broken["plate"], broken["well"]) == ("PLATE9", "A01")
    hits = sorted((tmp_path / "hits").iterdir())
    expected_hits = [r for r in rows.values() if r["crystals"] and float(r["crystals"]) > threshold]
    assert 0 < len(hits) == len(expected_hits) < len(rows) - 1


# ----------------------------------------------------------------------------- import


def _write_checkpoint(prefix: Path, tensors: dict[str, np.ndarray]) -> None:
    import tensorflow as tf

    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])


@pytest.mark.slow
def test_a_mismatched_checkpoint_is_refused_and_nothing_written(released_source, tmp_path):
    import tensorflow as tf

    from components.tools.released.importer import CheckpointMismatch, import_released
    from pipeline.cli import main

    reader = tf.train.load_checkpoint(str(released_source / "variables" / "variables"))
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    tensors = {name: np.zeros(shape, dtypes[name].as_numpy_dtype)
               for name, shape in shapes.items()}
    reshaped = "Inception/Mixed_6c/Branch_2/Conv2d_0b_7x1/weights"  # 160 filters, cap 144
    removed = "Inception/Mixed_7c/Branch_3/Conv2d_0b_1x1/BatchNorm/moving_variance"
    tensors[reshaped] = tensors[reshaped][..., :144]
    del tensors[removed]
    model_dir = tmp_path / "released"
    (model_dir / "variables").mkdir(parents=True)
    shutil.copy(released_source / "saved_model.pb", model_dir)
    _write_checkpoint(model_dir / "variables" / "variables", tensors)

    serving = tmp_path / "serving"
    with pytest.raises(CheckpointMismatch, match=f"tensor {reshaped} has shape "
                                                 r"\[7, 1, 144, 144\]; the paper network "
                                                 r"needs \[7, 1, 144, 160\]"):
        import_released(str(model_dir), str(serving))
    assert not serving.exists()

    # With the shape put right, the removed tensor is the first problem; an existing
    # serving folder is left as it was.
    tensors[reshaped] = np.zeros(shapes[reshaped], np.float32)
    shutil.rmtree(model_dir / "variables")
    (model_dir / "variables").mkdir()
    _write_checkpoint(model_dir / "variables" / "variables", tensors)
    (serving / "5").mkdir(parents=True)
    result = CliRunner().invoke(main, ["import-released", str(model_dir), "--out", str(serving)])
    assert result.exit_code != 0
    assert f"no tensor {removed}" in result.output and "nothing was written" in result.output
    assert sorted(p.name for p in serving.iterdir()) == ["5"]
    assert not any((serving / "5").iterdir())


@pytest.mark.slow
def test_import_summary_and_signatures(imported) -> None:
    from components.tools.serving import ServedModel

    assert imported.tensors == PAPER_TENSORS and imported.values == PAPER_VALUES
    assert imported.dropped == {"Inception/AuxLogits/*": 10, "global_step": 1}
    assert Path(imported.version_dir) == Path(imported.serving_dir) / str(imported.version)
    assert sorted(p.name for p in Path(imported.serving_dir).iterdir()) == [str(imported.version)]
    assert SIGNATURES.issubset(ServedModel(imported.version_dir).signature_names)


@pytest.mark.slow
def test_imported_model_equals_the_released_graph_on_real_photos(imported, released_model,
                                                                  photos) -> None:
    from components.names import BYTES_INPUT
    from components.tools.released.model import ReleasedModel
    from components.tools.serving import ServedModel

    images = [p.read_bytes() for p in photos]
    released = ReleasedModel(str(released_model))
    expected = released.run_jpeg(images)
    # Real numbers: finite, unsaturated, different from photograph to photograph.
    assert np.all(np.isfinite(expected))
    assert expected.min() > 0.02 and expected.max() < 0.98
    assert np.ptp(expected[:, 1]) > 0.005
    ours = ServedModel(imported.version_dir)
    batch = {BYTES_INPUT: np.array(images, dtype=object)}
    got = ours.run("probabilities", batch)["probabilities"]
    np.testing.assert_allclose(got, expected, atol=PARITY, rtol=0)
    # The released contract, classes sorted by score, is kept too.
    theirs = released._session.run([released.graph_info.classes_output,
                                    released.graph_info.scores_output],
                                   {released.graph_info.image_input: batch[BYTES_INPUT]})
    default = ours.run("serving_default", batch)
    np.testing.assert_allclose(default["scores"], theirs[1], atol=PARITY, rtol=0)
    assert (default["classes"] == theirs[0]).all()


@pytest.mark.slow
def test_a_released_client_request_to_the_imported_model_gets_the_released_answer(
    imported, released_model, photos
) -> None:
    """The body MARCO's released client sends (``jpeg2json.py``), answered through TF
    Serving's REST mapping from the imported version folder, equals what the released
    graph answers: the same classes in the same order, the same scores."""
    import json

    from components.tools.released.model import ReleasedModel
    from components.tools.serving import ServedModel
    from tests.test_serving import released_client_body

    images = [p.read_bytes() for p in photos[:4]]
    status, response = ServedModel(imported.version_dir).predict_rest(
        released_client_body(images))
    assert status == 200, response
    predictions = json.loads(json.dumps(response))["predictions"]
    released = ReleasedModel(str(released_model))
    info = released.graph_info
    classes, scores = released._session.run(
        [info.classes_output, info.scores_output],
        {info.image_input: np.array(images, dtype=object)})
    assert [p["classes"] for p in predictions] == [[c.decode() for c in row] for row in classes]
    np.testing.assert_allclose([p["scores"] for p in predictions], scores, atol=PARITY, rtol=0)


@pytest.mark.slow
def test_imported_model_scores_like_a_trained_one(imported, photos, tmp_path) -> None:
    """``marco score`` takes the imported serving folder as a project model."""
    from components.tools.scoring.beam import ScoreOptions, score_images
    from components.tools.scoring.model import PROJECT_MODEL

    folder = tmp_path / "plate"
    folder.mkdir()
    for photo in photos[:2]:
        shutil.copy(photo, folder)
    summary = score_images([str(folder)], imported.serving_dir, str(tmp_path / "r.csv"),
                           ScoreOptions(progress=False))
    assert summary.model_kind == PROJECT_MODEL
    assert summary.model_version == imported.version
    assert summary.results.scored == 2 and summary.results.errors == 0


@pytest.mark.slow
def test_the_imported_model_exports_to_tflite_with_the_released_answers(
    imported, released_model, photos, tmp_path
) -> None:
    """``marco export-tflite`` takes the imported serving folder; on real photographs
    the TF Lite model gives the released graph's probabilities."""
    from components.tools.released.model import ReleasedModel
    from components.tools.scoring.tflite import TFLiteScorer, prepare_image
    from pipeline.cli import main

    out = tmp_path / "marco.tflite"
    result = CliRunner().invoke(main, ["export-tflite", "--model", imported.serving_dir,
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "input 'image': float32 [1, 599, 599, 3]" in result.output
    images = [p.read_bytes() for p in photos[:3]]
    scorer = TFLiteScorer(str(out))
    lite = np.stack([scorer.probabilities(prepare_image(image, 599)) for image in images])
    expected = ReleasedModel(str(released_model)).run_jpeg(images)
    np.testing.assert_allclose(lite, expected, atol=PARITY, rtol=0)


def test_summary_lines_say_what_was_dropped() -> None:
    from components.tools.released.importer import ImportSummary
    from pipeline.commands.released import summary_lines

    summary = ImportSummary("/m", "/s", 7, "/s/7", 382, 8_964_068,
                            {"Inception/AuxLogits/*": 10, "global_step": 1}, 2_512_517,
                            ("Clear", "Crystals", "Other", "Precipitate"), "built", 3.0)
    text = "\n".join(summary_lines(summary))
    assert "382 tensors (8,964,068 values)" in text
    assert "Inception/AuxLogits/* (10 tensors, the auxiliary head" in text
    assert "global_step (1 tensor, the training step counter)" in text
    assert "/s/7" in text


def test_png_of_jpeg_pixels_prepares_like_the_jpeg() -> None:
    """The preparation used for non-JPEG files is lossless: same pixels, same input."""
    import tensorflow as tf
    from PIL import Image

    from components.model import preprocessing

    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(small).resize((320, 240)).save(jpeg, format="JPEG", quality=90)
    pixels = tf.io.decode_jpeg(jpeg.getvalue(), channels=3).numpy()
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    a = preprocessing.eval_preprocess(jpeg.getvalue(), 64).numpy()
    b = preprocessing.eval_preprocess(png.getvalue(), 64).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)


def _raw_example(image: bytes, institution: str, native_label: str) -> bytes:
    """A tf.Example of the ingested format, with every feature the schema requires."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tensorflow_transform.tf_metadata import schema_utils

    from schemas import SCHEMA_FILE

    schema = text_format.Parse(SCHEMA_FILE.read_text(), schema_pb2.Schema())
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    values = {"image_bytes": image, "institution": institution.encode(),
              "native_label": native_label.encode(), "image_format": b"jpeg"}
    features = {}
    for name, feature in spec.items():
        if not isinstance(feature, tf.io.FixedLenFeature):
            continue
        if feature.dtype == tf.string:
            value = values.get(name, name.encode())
            features[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        else:
            features[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[3]))
    return tf.train.Example(
        features=tf.train.Features(feature=features)).SerializeToString()


@pytest.mark.slow
def test_imported_model_has_the_evaluators_signatures(imported, photos) -> None:
    """serving_examples scores raw examples as probabilities does; transform_features
    gives their label: what the Evaluator calls."""
    from components.catalogue import load_catalogue
    from components.tools.serving import ServedModel

    code, native, class_id = load_catalogue().mapping_rows()[0]
    images = [p.read_bytes() for p in photos[:2]]
    examples = np.array([_raw_example(b, code, native) for b in images], dtype=object)
    model = ServedModel(imported.version_dir)
    direct = model.run("probabilities", {"image_bytes": np.array(images, dtype=object)})
    through_examples = model.run("serving_examples", {"examples": examples})
    np.testing.assert_allclose(through_examples["probabilities"], direct["probabilities"],
                               atol=1e-6)
    labels = model.run("transform_features", {"examples": examples})["label"]
    assert np.asarray(labels).reshape(-1).tolist() == [class_id, class_id]


# ------------------------------------------------------------ fine-tuning the imported model


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_imported_model_fine_tunes_and_is_the_baseline(imported, tmp_path) -> None:
    """``marco import-released``'s serving folder is what ``--init-from`` takes: the
    ``finetune`` preset's network (paper, 599 px) starts from its weights, a few steps
    leave every frozen tensor bit-identical to the imported one and move every
    trainable kernel, and while nothing is served the Evaluator's baseline is this
    imported model, byte for byte."""
    import dataclasses
    import fnmatch

    from tfx.types import standard_artifacts
    from tfx.utils import path_utils

    from components.baseline import executor as baseline_executor
    from components.baseline import served
    from components.trainer.train import train_model
    from components.trainer.warm_start import load_init_network
    from pipeline.config import PRESETS
    from tests.test_finetune import _weights
    from tests.trainer_fixtures import write_transformed

    preset = PRESETS["finetune"].training
    config = dataclasses.replace(preset, batch_size=2, shuffle_buffer=8,
                                 checkpoint_every=1000, seed=11)
    assert config.model_config.input_size == 599
    write_transformed(tmp_path / "train.gz", 8, seed=0)
    write_transformed(tmp_path / "eval.gz", 4, seed=1)

    init, _ = load_init_network(imported.serving_dir)
    before = _weights(init)
    del init
    model, metrics = train_model(config, str(tmp_path / "train.gz"), str(tmp_path / "eval.gz"),
                                 str(tmp_path / "run"), train_steps=3, eval_steps=1,
                                 init_from=imported.serving_dir)
    assert model.input_shape[1:3] == (599, 599)
    after = _weights(model)
    assert after.keys() == before.keys()

    patterns = preset.trainable_layers.split(",")

    def trainable(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name.rsplit("/", 1)[0], p) for p in patterns)

    frozen = [n for n in before if not trainable(n)]
    trained = [n for n in before if trainable(n)]
    assert any(n.startswith("Mixed_7a/") for n in trained)
    assert any(n.startswith("Logits/") for n in trained)
    assert len(frozen) > 2 * len(trained) > 0
    moved = [n for n in frozen if not np.array_equal(before[n], after[n])]
    assert not moved, f"frozen tensors changed: {moved[:5]}"
    kernels = [n for n in trained if n.endswith("/kernel")]
    unchanged = [n for n in kernels if np.array_equal(before[n], after[n])]
    assert kernels and not unchanged, f"trainable kernels that did not move: {unchanged[:5]}"
    assert np.isfinite(metrics["loss"])

    baseline = standard_artifacts.Model()
    baseline.uri = str(tmp_path / "baseline")
    baseline_executor.Executor().Do(
        {}, {baseline_executor.MODEL_KEY: [baseline]},
        {baseline_executor.SERVING_DIR_KEY: str(tmp_path / "serving"),
         baseline_executor.INIT_FROM_KEY: imported.serving_dir})
    assert baseline_executor.is_init_baseline(baseline)
    assert baseline.get_string_custom_property(
        baseline_executor.SERVED_VERSION_PROPERTY) == f"init:{imported.version}"
    assert served.saved_model_digest(path_utils.serving_model_dir(baseline.uri)) == (
        served.saved_model_digest(imported.version_dir))
