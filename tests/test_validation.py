"""``marco sources validate`` on a clean generated set and on one with planted problems."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.catalogue import load_catalogue
from components.tools.synth.writer import generate
from components.tools.validation import validate_data
from pipeline.cli import main


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, 160, seed=11, scale=0.15, workers=1)
    return out


@pytest.fixture
def damaged_set(clean_set, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(clean_set, data)
    # GSK manifest: an unmapped label twice, a missing file, then break two files.
    manifest = data / "GSK" / "labels.csv"
    lines = manifest.read_text().splitlines()
    rows = lines[1:]
    lines += [rows[0].split(",")[0].replace(".jpg", "_x.jpg") + ",crystal-ish",
              rows[1].split(",")[0].replace(".jpg", "_y.jpg") + ",crystal-ish",
              "GSK000000_H12_19990101-000000.jpg,clear"]
    manifest.write_text("\n".join(lines) + "\n")
    for row, suffix in ((rows[0], "_x"), (rows[1], "_y")):
        src = data / "GSK" / "images" / row.split(",")[0]
        shutil.copy(src, src.with_name(src.stem + suffix + ".jpg"))
    first = data / "GSK" / "images" / rows[2].split(",")[0]
    first.write_bytes(b"")
    second = data / "GSK" / "images" / rows[3].split(",")[0]
    second.write_bytes(second.read_bytes()[: len(second.read_bytes()) // 3])
    # MERCK: a repeated image id.
    export = sorted((data / "MERCK").glob("*.jsonl"))[0]
    records = export.read_text().splitlines()
    clone = json.loads(records[1])
    clone["id"] = json.loads(records[0])["id"]
    export.write_text("\n".join([*records, json.dumps(clone)]) + "\n")
    return data


def test_clean_generated_set_has_no_problems(clean_set):
    report = validate_data(load_catalogue(), clean_set, workers=1)
    assert report.ok, [p.describe() for p in report.problems]
    summary = json.loads((clean_set / "synth.json").read_text())
    assert sum(r.records for r in report.sources.values()) == 160
    for code, source_report in report.sources.items():
        assert source_report.records == summary["institutions"][code]["images"]


def test_planted_problems_are_each_reported(damaged_set):
    report = validate_data(load_catalogue(), damaged_set, workers=2)
    counts = report.problem_counts()
    assert counts == {
        "unmapped_label": 2,
        "missing_file": 1,
        "empty_file": 1,
        "truncated_image": 1,
        "duplicate_image_id": 1,
    }
    gsk = report.sources["GSK"]
    assert gsk.unmapped == {"crystal-ish": 2}
    assert all(p.endswith((".jpg",)) for p in gsk.unmapped_examples["crystal-ish"])
    duplicate = next(p for p in report.problems if p.kind == "duplicate_image_id")
    # Ingestion's rule: the smallest locator (the export's first line) is kept.
    assert duplicate.institution == "MERCK" and "which is kept" in duplicate.detail
    assert duplicate.detail.endswith(".jsonl:1, which is kept")
    for source_report in report.sources.values():
        assert source_report.records == source_report.usable + sum(
            source_report.quarantined.values()
        )
    assert gsk.quarantined == {"unmapped_label": 2, "missing_file": 1, "empty_file": 1,
                               "truncated_image": 1}
    missing = next(p for p in report.problems if p.kind == "missing_file")
    assert missing.path.endswith("GSK000000_H12_19990101-000000.jpg")
    assert missing.origin.endswith("labels.csv:" + str(len(
        (damaged_set / "GSK" / "labels.csv").read_text().splitlines())))


def test_cli_exit_code_and_listing(damaged_set, clean_set, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["sources", "validate", str(damaged_set), "--max-problems", "2",
                               "--json", str(tmp_path / "r.json")])
    assert bad.exit_code == 1, bad.output
    assert "6 problem(s)" in bad.output
    assert "... and 4 more" in bad.output
    assert "native label 'crystal-ish' (2 records) is not mapped" in bad.output
    assert json.loads((tmp_path / "r.json").read_text())["problem_counts"]["missing_file"] == 1
    good = runner.invoke(main, ["sources", "validate", str(clean_set), "--no-images"])
    assert good.exit_code == 0, good.output
    assert "no problems (image files present)" in good.output


def test_missing_institution_data_and_unused_label_warning(clean_set, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(clean_set, data)
    shutil.rmtree(data / "BMS")
    catalogue = load_catalogue()
    report = validate_data(catalogue, data, check_images=False)
    assert report.problem_counts() == {"missing_source_data": 1}
    only = validate_data(catalogue, data, institutions=["MERCK"], check_images=False)
    assert only.ok and list(only.sources) == ["MERCK"]
    # Remove every '100' record from MERCK: mapped but never seen is a warning.
    export = sorted((data / "MERCK").glob("*.jsonl"))[0]
    kept = [r for r in export.read_text().splitlines() if json.loads(r)["score"] != "100"]
    for other in sorted((data / "MERCK").glob("*.jsonl"))[1:]:
        kept += [r for r in other.read_text().splitlines() if json.loads(r)["score"] != "100"]
        other.unlink()
    export.write_text("\n".join(kept) + "\n")
    report = validate_data(catalogue, data, institutions=["MERCK"], check_images=False)
    assert report.ok
    assert any("'100' is mapped" in w for w in report.sources["MERCK"].warnings)


def test_cli_rejects_unknown_institution(clean_set):
    result = CliRunner().invoke(main, ["sources", "validate", str(clean_set), "--only", "XYZ"])
    assert result.exit_code == 2 and "XYZ not in the catalogue" in result.output


def test_every_subcommand_has_help():
    runner = CliRunner()

    def walk(command, path):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(main, [])
