"""The Kubeflow V2 compile of the same graph, and clear errors for bad cluster settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kubeflow.runner import SettingsError, compile_pipeline, parse_settings

GOOD = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "kubeflow" / "pipeline.example.yaml").read_text()
)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"project": None}, "project"),
        ({"pipeline_root": "/local/root"}, "pipeline_root"),
        ({"data_dir": None}, "data_dir"),
        ({"preset": "huge"}, "preset"),
        ({"dataflow_max_workers": 0}, "dataflow_max_workers"),
        ({"acclerator": "x"}, "acclerator"),
    ],
)
def test_bad_settings_name_the_field(change, field):
    data = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(SettingsError, match=f"settings: {field}:"):
        parse_settings(data)


@pytest.mark.slow
def test_compiled_spec_has_the_graph_image_and_dataflow_args(tmp_path):
    settings = parse_settings(GOOD)
    spec = compile_pipeline(settings)
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"]
    assert {"ImageExampleGen", "ImportSchemaGen", "StatisticsGen", "ExampleValidator",
            "AnomalyGate", "Transform", "Trainer"} <= set(tasks)
    assert "AnomalyGate" in tasks["Transform"]["dependentTasks"]
    executors = spec["pipelineSpec"]["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {GOOD["image"]}
    text = json.dumps(spec)
    assert "--runner=DataflowRunner" in text and "--region=europe-west4" in text
    out = tmp_path / "pipeline.json"
    result = CliRunner().invoke(
        __import__("pipeline.cli", fromlist=["main"]).main,
        ["compile", "--config", str(_write(tmp_path, GOOD)), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["pipelineSpec"]["pipelineInfo"]["name"] == "marco"


def _write(folder: Path, data: dict) -> Path:
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
