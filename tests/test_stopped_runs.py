"""A run stopped on purpose ends with a short message and keeps its full report.

The quarantine budget (ImageExampleGen) and the anomaly gate stop runs. TFX removes a
failed step's output folder, so each writes its full report into the run folder's
``stopped-runs/`` (``<pipeline root>/stopped-runs/`` on Kubeflow and Vertex AI), and
`marco run` names it in a few lines, without a traceback.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from tensorflow_metadata.proto.v0 import anomalies_pb2

from pipeline.cli import main
from tests.ingestion_fixtures import make_planted_set


@pytest.mark.slow
@pytest.mark.e2e
def test_a_run_over_the_quarantine_budget_stops_cleanly_and_keeps_its_report(tmp_path):
    planted = make_planted_set(tmp_path / "data", 40)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--data", str(planted.data_dir), "--preset",
                                       "tiny", "--out", str(out), "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "QuarantineBudgetExceeded" not in result.output
    message = result.output[result.output.index("Error: "):]
    assert len(message.splitlines()) <= 5, message
    # How many of how many, per reason, where the report is, how to raise the budget.
    match = re.search(r"(\d+) of (\d+) inputs \(([\d.]+)%\) were quarantined", message)
    assert match, message
    quarantined, total = int(match.group(1)), int(match.group(2))
    assert quarantined >= len(planted.expected_quarantine)
    reasons = dict(re.findall(r"(\w+) (\d+)", message.splitlines()[1].split(": ", 1)[1]))
    for reason, count in Counter(planted.expected_quarantine.values()).items():
        assert int(reasons[reason]) >= count, reason
    assert sum(int(n) for n in reasons.values()) == quarantined
    needed = -(-quarantined * 100 // total) / 100
    assert f"--quarantine-budget {needed:g}" in message
    [named] = re.findall(r"full quarantine report.*: (\S+)$", message, re.MULTILINE)
    report = Path(named)
    assert report.parent == out / "stopped-runs" and report.is_file()
    # The failed step's own folder is gone; the report outlived it, with every record.
    assert not list((out / "pipeline" / "ImageExampleGen" / "examples").glob("*/quarantine"))
    with report.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == quarantined
    by_path = {row["path"]: row for row in rows}
    for path, reason in planted.expected_quarantine.items():
        assert by_path[path]["reason"] == reason, path
    for row in rows:
        assert row["reason"] and row["institution"] and row["origin"], row
    manifest_rows = [r for r in rows if r["origin"].rsplit(":", 1)[0].endswith(".csv")]
    assert manifest_rows and all(re.search(r":\d+$", r["origin"]) for r in manifest_rows)


def _anomalies_folder(tmp_path: Path) -> dict[str, str]:
    """An ExampleAnomalies artifact's split folders, as ExampleValidator writes them,
    with an institution and a native label outside the schema in the train split."""
    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["institution"]
    reason = info.reason.add()
    reason.type = anomalies_pb2.AnomalyInfo.ENUM_TYPE_UNEXPECTED_STRING_VALUES
    reason.short_description = "Unexpected string values"
    reason.description = "Examples contain values missing from the schema: NEWLAB (~10%)."
    folders = {}
    for split, found in (("train", anomalies), ("eval", anomalies_pb2.Anomalies())):
        folder = tmp_path / "anomalies" / f"Split-{split}"
        folder.mkdir(parents=True)
        (folder / "SchemaDiff.pb").write_bytes(found.SerializeToString())
        folders[split] = str(folder)
    return folders


def _gate_executor(run_id: str):
    from tfx.dsl.components.base import base_executor

    from components.anomaly_gate import Executor

    return Executor(base_executor.BaseExecutor.Context(pipeline_run_id=run_id))


def _anomalies_input(folders: dict[str, str]):
    from tfx.types import artifact_utils, standard_artifacts

    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(Path(folders["train"]).parent)
    artifact.split_names = artifact_utils.encode_split_names(sorted(folders))
    return {"anomalies": [artifact]}


def test_the_gate_writes_its_full_report_where_it_outlives_the_step(tmp_path):
    from components.anomaly_gate import DataAnomalies

    folders = _anomalies_folder(tmp_path)
    stops = tmp_path / "run" / "stopped-runs"
    with pytest.raises(DataAnomalies) as raised:
        _gate_executor("2026-01-02T03:04:05.6").Do(
            _anomalies_input(folders), {},
            {"stop_report_dir": str(stops), "catalogue_dir": "/labs/catalogue"})
    report = stops / "2026-01-02T03-04-05.6-anomalies.txt"
    assert raised.value.report_path == str(report)
    text = report.read_text()
    assert "[train] feature 'institution'" in text and "NEWLAB" in text
    assert folders["train"] in text and "/labs/catalogue" in text
    assert str(report) in str(raised.value)
    assert "/labs/catalogue" in str(raised.value)
    # Without a folder the gate still stops the run, naming the committed schema.
    with pytest.raises(DataAnomalies, match="schemas/schema.pbtxt") as raised:
        _gate_executor("again").Do(_anomalies_input(folders), {}, {})
    assert raised.value.report_path is None


def test_marco_run_stopped_by_the_gate_names_its_report_without_a_traceback(
    tmp_path, monkeypatch
):
    """The gate's own executor raises inside the run; the command reports it."""
    import pipeline.local

    folders = _anomalies_folder(tmp_path)

    def run_until_the_gate(config, run_dir, **kwargs):
        _gate_executor("run-7").Do(_anomalies_input(folders), {},
                                   {"stop_report_dir": config.stop_report_dir})

    monkeypatch.setattr(pipeline.local, "run_local", run_until_the_gate)
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--data", str(data), "--preset", "tiny",
                                       "--out", str(out)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    report = out.resolve() / "stopped-runs" / "run-7-anomalies.txt"
    assert report.is_file()
    assert f"full anomalies report: {report}" in result.output
    assert "[train] feature 'institution'" in result.output
    assert "marco schema update" in result.output


def test_stop_report_names_tell_runs_apart():
    from components.stop_reports import report_path, run_stamp

    assert report_path(None, "x", "quarantine.csv") is None
    assert report_path("gs://b/root/stopped-runs/", "2026-01-02T03:04:05", "quarantine.csv") \
        == "gs://b/root/stopped-runs/2026-01-02T03-04-05-quarantine.csv"
    assert run_stamp() != run_stamp()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", run_stamp())
