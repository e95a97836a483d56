"""What `marco run`, `marco demo` and `marco score` show on the console, what goes to their
log instead, and the demo's own brightness-only baseline that its summary shows.

The console carries the project's progress lines, its results and the warnings its
own code logs; TensorFlow's C++ messages, library log records, Python warnings and
worker processes' output go to the run's log file.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ingestion_fixtures import make_synthetic
from tests.scoring_fixtures import serving_dir  # noqa: F401  (fixture)

# Lines that used to reach the console of a `marco run` or `marco demo`.
NOISE = {
    "TensorFlow's CUDA plugin registration": re.compile(r"Unable to register cu(DNN|FFT|BLAS)"),
    "TFX's artifact query warning": re.compile(r"ArtifactQuery\.property_predicate"),
    "TFX's payload_format warning": re.compile(r"does not have payload_format"),
    "TFMA's divide warnings": re.compile(r"RuntimeWarning|invalid value encountered"),
    "TensorFlow deprecation notices": re.compile(r"is deprecated|Instructions for updating"),
    "TensorFlow's logger": re.compile(r"WARNING:tensorflow"),
    "absl INFO lines": re.compile(r"INFO:absl|^I\d{4} ", re.MULTILINE),
    "google api_core's Python version warning": re.compile(r"non-supported Python version"),
    "Python warnings": re.compile(r"\w+Warning: "),
    "ignored exceptions": re.compile(r"Exception ignored in"),
    "tracebacks": re.compile(r"Traceback \(most recent call last\)"),
    "Keras' own epoch lines": re.compile(r"ms/step|s/epoch"),
}
NODES = ("ImageExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
         "AnomalyGate", "Transform", "Trainer", "ServedModelBaseline", "Evaluator",
         "Pusher")


def _marco() -> str:
    return str(Path(sys.executable).with_name("marco"))


def _noise_in(text: str) -> dict[str, str]:
    found = {}
    for name, pattern in NOISE.items():
        if match := pattern.search(text):
            start = text.rfind("\n", 0, match.start()) + 1
            found[name] = text[start:text.find("\n", match.end())]
    return found


# ----------------------------------------------------------------------------- routing


class _NoisyOnCollection:
    def __del__(self):
        raise ValueError("raised while being collected")


def test_everything_but_the_commands_lines_goes_to_the_log(tmp_path, capfd):
    from pipeline.local import console_and_log

    log = tmp_path / "run" / "run.log"
    with console_and_log(log) as console:
        console.echo("[1/3] Step running")
        print("a library's print")
        os.write(1, b"C++ on descriptor 1\n")
        os.write(2, b"C++ on descriptor 2\n")
        subprocess.run([sys.executable, "-c", "import sys; print('worker out'); "
                        "print('worker err', file=sys.stderr)"], check=True)
        logging.getLogger("absl").info("an absl INFO line")
        logging.getLogger("tfx.orchestration").warning("a library warning")
        logging.getLogger("components.trainer").warning("a warning of the project")
        logging.getLogger("components.trainer").info("the project's account")
        warnings.warn("a Python warning", RuntimeWarning, stacklevel=1)
        _NoisyOnCollection()
        gc.collect()
        sys.stderr.write("progress bar\r")
    out, err = capfd.readouterr()
    assert out.splitlines() == ["[1/3] Step running", "warning: a warning of the project"]
    assert err == "progress bar\r"
    text = log.read_text()
    for routed in ("a library's print", "C++ on descriptor 1", "C++ on descriptor 2",
                   "worker out", "worker err", "an absl INFO line", "a library warning",
                   "a warning of the project", "the project's account", "a Python warning",
                   "raised while being collected"):
        assert routed in text, routed
    assert "[1/3] Step running" not in text
    # Everything is back where it was.
    print("after")
    os.write(2, b"descriptor 2 after\n")
    logging.getLogger("components.trainer").warning("not routed any more")
    out, err = capfd.readouterr()
    assert out == "after\n" and "descriptor 2 after" in err
    assert "not routed any more" not in log.read_text()


def test_routing_nests_and_an_exception_leaves_nothing_routed(tmp_path, capfd):
    from pipeline.local import console_and_log

    log = tmp_path / "run.log"
    with pytest.raises(RuntimeError), console_and_log(log) as outer:
        with console_and_log(tmp_path / "other.log") as inner:
            assert inner is outer
            print("inside")
        raise RuntimeError("stop")
    print("outside")
    assert capfd.readouterr().out == "outside\n"
    assert "inside" in log.read_text() and not (tmp_path / "other.log").exists()


def test_tensorflow_and_its_workers_get_a_c_plus_plus_log_level_that_keeps_errors():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", "import components, os, subprocess, sys; "
         "print(os.environ['TF_CPP_MIN_LOG_LEVEL']); sys.stdout.flush(); "
         "subprocess.run([sys.executable, '-c', "
         "'import os; print(os.environ[\"TF_CPP_MIN_LOG_LEVEL\"])'])"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # 2 hides C++ INFO and WARNING lines; errors still print, to the run's log.
    assert result.stdout.split() == ["2", "2"]


def test_the_command_line_loads_no_tensorflow_before_a_command_routes_its_output():
    """TensorFlow prints to the process's stderr as it loads: the commands load it only
    once their output goes to the log."""
    code = ("import sys, pipeline.cli, pipeline.local, pipeline.commands.run; "
            "print(sorted(m for m in ('tensorflow', 'tfx', 'apache_beam') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert result.stderr == ""


def test_a_failure_is_one_line_and_the_log_path():
    from pipeline.commands.run import failure_message

    log = Path("out/run.log")
    assert failure_message(ValueError("bad schema\nmore detail"), log) == (
        "the pipeline stopped: ValueError: bad schema\nfull traceback: out/run.log")
    beam = RuntimeError("Traceback (most recent call last):\n  File x\nKeyError: 'label'")
    assert failure_message(beam, log).splitlines()[0] == (
        "the pipeline stopped: RuntimeError: KeyError: 'label'")
    assert failure_message(MemoryError(), log).splitlines()[0] == (
        "the pipeline stopped: MemoryError")


# ----------------------------------------------------------------------------- marco run


@pytest.mark.slow
@pytest.mark.e2e
def test_marco_run_console_shows_progress_and_results_and_the_log_has_the_rest(
    tmp_path, catalogue_copy
):
    """The run reads a catalogue outside the checkout that adds a sixth institution:
    its schema is derived from that catalogue (and recorded in ML Metadata), and the
    new institution gets its own slice in the report."""
    from components.catalogue import load_catalogue
    from tests.ingestion_fixtures import add_institution

    data, out = tmp_path / "data", tmp_path / "run"
    add_institution(catalogue_copy)
    make_synthetic(data, 48, catalogue=load_catalogue(catalogue_copy))
    nodes = ("CatalogueSchemaGen", *(n for n in NODES if n != "ImportSchemaGen"))
    # 8 steps: two epochs of the 36 training images at the tiny preset's batch of 8,
    # so that the Trainer reports epochs for the progress lines. One Beam worker
    # process (a child whose output must be routed too) keeps the run short.
    result = subprocess.run(
        [_marco(), "run", "--data", str(data), "--preset", "tiny", "--out", str(out),
         "--eval-percent", "25", "--workers", "1", "--train-steps", "8",
         "--catalogue", str(catalogue_copy)],
        capture_output=True, text=True, timeout=780,
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    log = out / "run.log"
    assert result.stdout.splitlines()[0] == (
        f"running the MARCO pipeline (tiny preset) into {out}; full log: {log}")
    assert _noise_in(console) == {}
    assert result.stderr == ""
    for position, node in enumerate(nodes, start=1):
        step = rf"\[{position}/{len(nodes)}\] {node}"
        assert re.search(rf"^{step} running$", result.stdout, re.MULTILINE), node
        assert re.search(rf"^{step} done in \d+ s$", result.stdout, re.MULTILINE), node
    trainer = rf"\[{nodes.index('Trainer') + 1}/{len(nodes)}\] Trainer"
    assert re.search(rf"^{trainer} epoch \d+/\d+: loss [\d.]+, accuracy [\d.]+$",
                     result.stdout, re.MULTILINE)
    assert re.search(r"^accuracy [\d.]+% on \d+ eval images$", result.stdout, re.MULTILINE)
    assert re.search(r"^blessed; pushed to .*serving/\d+$", result.stdout, re.MULTILINE)
    assert f"report: {out / 'report' / 'report.md'}" in result.stdout
    _check_outside_catalogue(out, catalogue_copy)
    # What the console was spared is in the log, with the lines progress was read from.
    text = log.read_text()
    routed = _noise_in(text)
    for name in ("TensorFlow's CUDA plugin registration", "TFX's artifact query warning",
                 "TFX's payload_format warning", "Python warnings"):
        assert name in routed, name
    assert re.search(r"INFO absl: Component Trainer is running\.", text)
    assert re.search(r"INFO absl: Epoch \d+/\d+", text)  # Keras' own, in the log only
    assert re.search(r"INFO components\.trainer\.epochs: epoch 2/2: accuracy ", text)


def _check_outside_catalogue(out: Path, catalogue: Path) -> None:
    """The sixth institution reached the report's slices, and ML Metadata shows the
    catalogue the model was trained on: the Trainer read the schema derived from it."""
    import json

    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.local import metadata_config

    report = json.loads((out / "report" / "report.json").read_text())
    assert report["institutions"]["NEWLAB"]["examples"] >= 1, report["institutions"]
    store = metadata_store.MetadataStore(metadata_config(out))
    [schema] = store.get_artifacts_by_type("Schema")
    properties = {k: v.string_value for k, v in schema.custom_properties.items()}
    assert properties["catalogue_dir"] == str(catalogue)
    assert "NEWLAB" in json.loads(properties["institutions"])
    assert "NEWLAB.yaml" in json.loads(properties["catalogue_files"])
    assert "NEWLAB" in Path(schema.uri, "schema.pbtxt").read_text()
    readers = {e.execution_id for e in store.get_events_by_artifact_ids([schema.id])
               if e.type == metadata_store_pb2.Event.INPUT}
    types = {t.id: t.name for t in store.get_execution_types()}
    assert any("Trainer" in types[e.type_id] for e in store.get_executions_by_id(readers))


# ----------------------------------------------------------------------------- marco score


@pytest.mark.slow
def test_marco_score_console_has_progress_and_results_and_the_log_the_rest(
        serving_dir, tmp_path):  # noqa: F811
    images = tmp_path / "plate"
    images.mkdir()
    for i, grey in enumerate((40, 120, 200)):
        Image.fromarray(np.full((60, 80, 3), grey, np.uint8)).save(images / f"A0{i}.jpg")
    out = tmp_path / "scores" / "results.csv"
    result = subprocess.run(
        [_marco(), "score", str(images), "--model", str(serving_dir), "--out", str(out),
         "--direct_num_workers=1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    log = tmp_path / "scores" / "results.log"
    lines = result.stdout.splitlines()
    assert lines[0] == f"scoring with {serving_dir}; full log: {log}"
    assert lines[1].startswith("scored 3 of 3 images")
    assert lines[-1] == f"results: {out}, highest crystal probability first"
    assert _noise_in(result.stdout) == {}
    # stderr has the progress bar only.
    assert _noise_in(result.stderr) == {}
    assert "scoring:" in result.stderr
    assert "Unable to register" in log.read_text()


def test_marco_score_that_scores_nothing_leaves_no_log(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    out = tmp_path / "results.csv"
    result = CliRunner().invoke(main, ["score", str(tmp_path / "nope"), "--model",
                                       str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "full log:" in result.output
    assert not (tmp_path / "results.log").exists() and not out.exists()


# ----------------------------------------------------------------------------- demo baseline


def test_brightness_features_are_the_grey_levels_mean_and_spread(tmp_path):
    from components.tools.brightness_baseline import brightness_features

    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((10, 20), 100, np.uint8)).save(flat)
    halves = np.zeros((10, 20, 3), np.uint8)
    halves[:, 10:] = (0, 255, 0)  # pure green is grey level 150 (ITU-R 601-2 luma)
    Image.fromarray(halves).save(tmp_path / "halves.png")
    features = brightness_features([flat, tmp_path / "halves.png"])
    assert features.tolist() == [[100.0, 0.0], [75.0, 75.0]]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("baseline") / "data"
    make_synthetic(data, 40)
    return data


def _ids_by_split(data: Path, eval_percent: int) -> dict[str, int]:
    from components.catalogue import load_catalogue
    from components.ingestion.beam_stages import split_for
    from components.readers import read_source

    counts = {"train": 0, "eval": 0}
    for source in load_catalogue():
        for record in read_source(source, data):
            counts[split_for(record.image_id, eval_percent)] += 1
    return counts


def test_baseline_is_measured_on_the_pipelines_own_split(tiny_set):
    from components.tools.brightness_baseline import measure

    baseline = measure(tiny_set, eval_percent=25)
    expected = _ids_by_split(tiny_set, 25)
    assert (baseline.train_images, baseline.eval_images) == (expected["train"],
                                                             expected["eval"])
    assert baseline.skipped == 0
    assert baseline.accuracy == max(baseline.accuracies.values())
    assert set(baseline.accuracies) == {"gaussian_nb", "logistic_regression", "knn_15"}
    assert 0.0 < baseline.majority_rate <= 1.0
    assert baseline.cpu_seconds > 0


def test_baseline_learns_brightness_when_brightness_tells_the_class(tiny_set, tmp_path):
    """Every image redrawn flat, one grey level per class: brightness alone then names
    the class, so the baseline is perfect unless features and labels are mismatched."""
    import shutil

    from components.catalogue import load_catalogue
    from components.readers import read_source
    from components.tools.brightness_baseline import measure

    data = tmp_path / "data"
    shutil.copytree(tiny_set, data)
    catalogue = load_catalogue()
    for source in catalogue:
        for record in read_source(source, data):
            grey = 30 + 60 * source.class_of(record.native_label)
            with Image.open(record.path) as img:
                size, mode, fmt = img.size, img.mode, img.format
            flat = Image.new("L", size, grey).convert(mode)
            flat.save(record.path, format=fmt)
    baseline = measure(data, catalogue, eval_percent=25)
    assert baseline.accuracy == 1.0


def _summary() -> dict:
    return {
        "accuracy": 0.817, "examples": 169, "blessed": True, "threshold_failures": [],
        "institution_accuracy_spread": {"std": 0.09},
        "institutions": {"BMS": {"accuracy": 0.78}, "GSK": {"accuracy": 1.0}},
        "context": {"pushed_to": "marco-demo/run/serving/7", "baseline_accuracy": 0.487},
    }


def _baseline():
    from components.tools.brightness_baseline import BrightnessBaseline

    return BrightnessBaseline(
        accuracy=0.487, accuracies={"gaussian_nb": 0.487}, train_images=1331,
        eval_images=169, majority_class="precipitate", majority_rate=0.48,
        cpu_seconds=21.44,
    )


def test_demo_summary_puts_the_baseline_beside_the_accuracy():
    from pipeline.commands.demo import demo_summary

    lines = demo_summary(_summary(), _baseline())
    assert lines[:2] == [
        "accuracy 81.7% on 169 eval images",
        "brightness-only baseline 48.7% on the same 169 eval images (trained on the same "
        "1331 training images; 21.4 s of CPU)",
    ]
    assert sum("baseline" in line for line in lines) == 1
    assert lines[-1] == "blessed; pushed to marco-demo/run/serving/7"


def test_demo_measures_its_baseline_and_passes_it_to_the_run(tmp_path, monkeypatch):
    """`marco demo` without the pipeline: the run is replaced by one that prints the
    summary as the real one does."""
    from click.testing import CliRunner

    import pipeline.commands.run as run_command
    from pipeline.cli import main

    calls = {}

    def fake_run(out, preset_name, **options):
        calls.update(options, out=out)
        for line in options["summary_lines"](_summary()):
            print(line)  # sys.stdout is the log while routed: the console must not see it
        from pipeline.local import console_and_log

        with console_and_log(out / "run.log") as console:
            for line in options["summary_lines"](_summary()):
                console.echo(line)
        return _summary()

    monkeypatch.setattr(run_command, "run_pipeline", fake_run)
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--images", "40",
                                       "--scale", "0.1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"marco demo into {out}; full log: {out / 'run' / 'run.log'}"
    measured = calls["report_context"]["baseline_accuracy"]
    assert calls["eval_percent"] == 10 and calls["out"] == out / "run"
    [accuracy] = [i for i, line in enumerate(lines) if line.startswith("accuracy ")]
    assert lines[accuracy + 1].startswith(
        f"brightness-only baseline {100 * measured:.1f}% on the same ")
    assert result.stdout.count("accuracy 81.7%") == 1
