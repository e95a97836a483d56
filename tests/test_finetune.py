"""Fine-tuning from an earlier model: warm start, frozen layers, blessing against it.

The ``tiny`` network stands in for the paper network: loading by layer name, freezing
by slim scope and the baseline fallback do not depend on its size. The init model is
a tiny model trained on the class patterns of :mod:`tests.trainer_fixtures` and
exported with every serving signature, as ``marco import-released`` or a run's
Pusher leaves one.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from components.trainer import config as training
from components.trainer.warm_start import (
    InitModelMismatch,
    copy_weights_by_name,
    freeze,
    load_init_network,
)
from tests.trainer_fixtures import write_transformed

TRAINABLE = "Mixed_7c*,Logits/*"
INIT_VERSION = "1700000000"


def _tiny(**changes) -> training.TrainingConfig:
    return dataclasses.replace(training.TINY, **changes)


def _weights(model: tf.keras.Model) -> dict[str, np.ndarray]:
    """Every weight of ``model`` by layer and leaf name."""
    return {
        f"{layer.name}/{w.name.split(':')[0].rsplit('/', 1)[-1]}": w.numpy()
        for layer in model.layers for w in layer.weights
    }


def _is_trainable(name: str) -> bool:
    layer = name.rsplit("/", 1)[0]
    return any(fnmatch.fnmatchcase(layer, p) for p in TRAINABLE.split(","))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("finetune-data")
    write_transformed(folder / "train.gz", 96, seed=0)
    write_transformed(folder / "eval.gz", 32, seed=1)
    return str(folder / "train.gz"), str(folder / "eval.gz")


@pytest.fixture(scope="module")
def init_model(tmp_path_factory, data) -> tf.keras.Model:
    """A tiny model trained on the fixtures' class patterns (at its serving size)."""
    from components.trainer.train import train_model

    train, evaluation = data
    model, _ = train_model(
        _tiny(seed=3, optimizer="adam", learning_rate=0.002, epsilon=1e-7), train, evaluation,
        str(tmp_path_factory.mktemp("init-run")), train_steps=150)
    return model


def _export(model: tf.keras.Model, serving: Path, with_transform: bool) -> Path:
    """``model`` as version INIT_VERSION of a serving folder, as a Pusher leaves it."""
    from components.tools.released.importer import transform_output
    from components.trainer.export import export_model

    tft_output = None
    if with_transform:
        tft_output, _ = transform_output(None, str(serving.parent / "scratch"))
    export_model(model, str(serving / INIT_VERSION), tft_output)
    return serving


@pytest.fixture(scope="module")
def init_serving(tmp_path_factory, init_model) -> Path:
    return _export(init_model, tmp_path_factory.mktemp("init") / "serving", False)


def test_freeze_and_copy_refuse_what_does_not_fit():
    """A pattern matching no layer, a reshaped tensor and a missing layer are named."""
    from components.model.inception import build_model

    tiny = training.TINY.model_config
    model = build_model(tiny)
    with pytest.raises(ValueError, match="'Mixed_8\\*' matches no layer"):
        freeze(model, "Mixed_7*,Mixed_8*")
    trainable = freeze(model, TRAINABLE)
    assert "Logits/Conv2d_1c_1x1" in trainable
    assert "Mixed_7c/Branch_3/Conv2d_0b_1x1/BatchNorm" in trainable
    assert "Mixed_7b/Branch_0/Conv2d_0a_1x1" not in trainable
    assert not model.get_layer("Mixed_7b/Branch_0/Conv2d_0a_1x1/BatchNorm").trainable

    wider = build_model(dataclasses.replace(tiny, width_multiplier=0.25))
    with pytest.raises(InitModelMismatch,
                       match=r"tensor Conv2d_2b_3x3/kernel has shape \[3, 3, 8, 16\]"):
        copy_weights_by_name(wider, build_model(tiny))
    with_stem = build_model(dataclasses.replace(tiny, input_size=151, stem_conv=True))
    with pytest.raises(InitModelMismatch,
                       match=r"tensor Conv2d_1a_3x3/kernel has shape \[3, 3, 8, 8\]"):
        copy_weights_by_name(with_stem, build_model(tiny))
    with pytest.raises(InitModelMismatch, match="has no layer 'Conv2d_0a_3x3'"):
        copy_weights_by_name(build_model(tiny), with_stem)


def test_finetune_preset_needs_an_init_model():
    from pipeline.config import PRESETS, PipelineConfig

    preset = PRESETS["finetune"]
    assert preset.training.model == "paper"
    assert preset.training.model_config.input_size == 599
    assert preset.training.crop_scale is None  # the paper's patches at full resolution
    assert preset.training.trainable_layers == "Mixed_7*,Logits/*"
    with pytest.raises(ValueError, match="give init_from"):
        PipelineConfig(pipeline_root="/tmp/root", preset=preset, data_dir="/tmp/data")
    config = PipelineConfig(pipeline_root="/tmp/root", preset=preset, data_dir="/tmp/data",
                            init_from="/tmp/init")
    assert config.init_from == "/tmp/init"


def test_the_report_shows_the_model_beside_the_baseline(tmp_path):
    """Accuracy, crystal recall and the crystal operating points of both models."""
    import json

    from components.tools.report import tables
    from components.tools.report.render import JSON, MARKDOWN, write_report
    from components.tools.report.results import EvaluationResults, RocCurve, SliceResult

    # [true, predicted] in CLASS_NAMES order: clear, crystals, other, precipitate.
    ours = np.array([[8, 1, 0, 1], [0, 9, 0, 1], [1, 0, 3, 1], [0, 0, 0, 20]], float)
    theirs = np.array([[5, 0, 0, 5], [2, 6, 0, 2], [0, 0, 0, 5], [0, 0, 0, 10]], float)

    def overall(confusion, tpr):
        roc = RocCurve(np.array([0.9, 0.5, 0.1]), np.array(tpr), np.array([0.0, 0.04, 0.5]))
        return SliceResult("overall", float(confusion.sum()),
                           float(np.trace(confusion) / confusion.sum()), confusion,
                           roc={"crystals": roc})

    results = EvaluationResults("eval", overall(ours, [0.6, 0.96, 1.0]), {}, True, [],
                                baseline=overall(theirs, [0.3, 0.5, 1.0]))
    summary = write_report(results, tmp_path)
    comparison = json.loads((tmp_path / JSON).read_text())["comparison"]
    assert comparison == summary["comparison"]
    assert comparison["candidate"]["accuracy"] == pytest.approx(40 / 45)
    assert comparison["baseline"]["accuracy"] == pytest.approx(21 / 35)
    assert comparison["candidate"]["crystal_recall"] == pytest.approx(0.9)
    assert comparison["baseline"]["crystal_recall"] == pytest.approx(0.6)
    at_fpr = f"crystal_recall_at_fpr_below_{tables.FPR_BUDGET}"
    assert comparison["candidate"][at_fpr]["recall"] == 0.96
    assert comparison["baseline"][at_fpr]["recall"] == 0.5
    text = (tmp_path / MARKDOWN).read_text()
    assert "## This model against the baseline" in text
    assert "| accuracy | 88.9% | 60.0% |" in text
    assert "| crystal recall | 90.0% | 60.0% |" in text

    alone = write_report(dataclasses.replace(results, baseline=None), tmp_path / "alone")
    assert alone["comparison"] is None
    assert "against the baseline" not in (tmp_path / "alone" / MARKDOWN).read_text()


def test_marco_run_finetune_needs_an_existing_init_model(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    (tmp_path / "data").mkdir()
    base = ["run", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
            "--preset", "finetune"]
    result = CliRunner().invoke(main, base)
    assert result.exit_code == 2 and "give --init-from SERVING_DIR" in result.output
    result = CliRunner().invoke(main, [*base, "--init-from", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "--init-from" in result.output and "no SavedModel there" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_finetuning_loads_the_init_weights_freezes_the_rest_and_trains_the_top(
    tmp_path, data, init_serving
):
    from components.trainer.train import build_classifier, train_model

    init, init_dir = load_init_network(str(init_serving))
    assert init_dir == str(init_serving / INIT_VERSION)
    before = _weights(init)
    # The check below means something: a freshly built network differs from the init.
    fresh = _weights(build_classifier(_tiny()))
    assert not np.array_equal(fresh["Conv2d_1a_3x3/kernel"], before["Conv2d_1a_3x3/kernel"])

    train, evaluation = data
    model, metrics = train_model(
        _tiny(trainable_layers=TRAINABLE, learning_rate=0.05), train, evaluation,
        str(tmp_path / "run"), train_steps=4, init_from=str(init_serving),
    )
    after = _weights(model)
    assert after.keys() == before.keys()
    frozen = [name for name in before if not _is_trainable(name)]
    trained = [name for name in before if _is_trainable(name)]
    assert len(frozen) > 3 * len(trained) > 0
    changed_frozen = [n for n in frozen if not np.array_equal(before[n], after[n])]
    assert not changed_frozen, f"frozen weights changed: {changed_frozen[:5]}"
    # Batch-norm statistics of frozen layers are among them, bit for bit.
    assert any(n.endswith("/moving_mean") for n in frozen)
    # Every trainable kernel moved, and the trainable blocks' statistics followed the data.
    kernels = [n for n in trained if n.endswith("/kernel")]
    assert kernels and all(not np.array_equal(before[n], after[n]) for n in kernels)
    assert any(not np.array_equal(before[n], after[n])
               for n in trained if n.endswith("/moving_mean"))


@pytest.mark.slow
def test_an_init_model_of_another_network_is_refused_by_name(tmp_path, data, init_serving):
    """Training the demo network from the tiny init model stops before any step."""
    from components.trainer.train import train_model

    train, evaluation = data
    demo = dataclasses.replace(training.DEMO, cache_decoded=False, trainable_layers=TRAINABLE)
    where = re.escape(f"init model {init_serving / INIT_VERSION}")
    with pytest.raises(InitModelMismatch, match=f"{where} has no layer 'Conv2d_0a_3x3'"):
        train_model(demo, train, evaluation, str(tmp_path / "run"), train_steps=2,
                    init_from=str(init_serving))
    assert not (tmp_path / "run").exists()
    with pytest.raises(FileNotFoundError, match="no SavedModel there"):
        train_model(_tiny(), train, evaluation, str(tmp_path / "run2"), train_steps=2,
                    init_from=str(tmp_path / "nothing"))


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_finetune_worse_than_the_init_model_is_not_pushed(tmp_path, init_model):
    """The Evaluator's baseline is the init model while nothing is served; a fine-tune
    that is worse than it is neither blessed nor pushed, although it passes the
    accuracy floor (0). The fine-tune is worse by construction: its logits climb the
    loss (a negative learning rate) on images of the classes the init model learned."""
    from components.baseline.executor import (
        BASELINE_SOURCE_PROPERTY,
        SERVED_PATH_PROPERTY,
        SERVED_VERSION_PROPERTY,
        SOURCE_INIT,
    )
    from pipeline.config import PRESETS
    from pipeline.local import local_config, run_local
    from pipeline.runs import latest_outcome
    from tests.test_pipeline_e2e import _latest_io, _make_learnable

    init_serving = _export(init_model, tmp_path / "init" / "serving", True)
    data = tmp_path / "data"
    _make_learnable(data, 80)
    out = tmp_path / "run"
    out.mkdir()
    preset = dataclasses.replace(
        PRESETS["tiny"], train_steps=20, accuracy_floor=0.0,
        training=_tiny(trainable_layers="Logits/*", learning_rate=-0.05, seed=5),
    )
    config = local_config(out, preset, data_dir=str(data), workers=2, eval_percent=25,
                          init_from=str(init_serving))
    run_local(config, out)

    baseline = _latest_io(out, "ServedModelBaseline", "model", "OUTPUT")
    assert baseline.get_string_custom_property(BASELINE_SOURCE_PROPERTY) == SOURCE_INIT
    assert baseline.get_string_custom_property(SERVED_VERSION_PROPERTY) == f"init:{INIT_VERSION}"
    assert baseline.get_string_custom_property(SERVED_PATH_PROPERTY) == str(
        init_serving / INIT_VERSION)
    assert _latest_io(out, "Evaluator", "baseline_model", "INPUT").uri == baseline.uri
    blessing = _latest_io(out, "Evaluator", "blessing", "OUTPUT")
    assert blessing.get_string_custom_property("baseline_model") == baseline.uri
    outcome = latest_outcome(out)
    assert outcome.blessed is False and not outcome.pushed
    from components.tools.report.results import load_results

    results = load_results(outcome.evaluation_uri)
    assert results.baseline is not None
    assert results.overall.accuracy < results.baseline.accuracy
    assert any("change_threshold" in failure for failure in results.failures)
    assert not (out / "serving").exists() or not any((out / "serving").iterdir())
