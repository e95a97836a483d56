"""The three layout readers on good and malformed records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.catalogue import parse_source
from components.readers import BadRecord, Record, list_units, read_source


def make_source(layout: dict, labels=("clear", "xtal"), code="LAB") -> object:
    data = {
        "code": code,
        "name": "A lab",
        "imager": "imager",
        "setup": "setup",
        "layout": layout,
        "labels": [
            {"native": native, "class": "clear" if i == 0 else "crystals"}
            for i, native in enumerate(labels)
        ],
    }
    return parse_source(Path(f"/catalogue/{code}.yaml"), data)


def split(items):
    good = [i for i in items if isinstance(i, Record)]
    bad = [i for i in items if isinstance(i, BadRecord)]
    return good, bad


def test_csv_manifest_good_and_malformed_rows(tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "scores.csv").write_text(
        "Barcode;Well;File;Score\n"
        "P1;A01;img/P1_A01.jpg;clear\n"
        "P1;A02;img/P1_A02.jpg;xtal\n"
        "P1;A03;;xtal\n"
        "P1;A04;img/P1_A04.jpg;\n"
        "P1;A05;img/P1_A05.jpg;xtal;extra\n"
    )
    source = make_source({
        "reader": "csv_manifest",
        "manifest": "lab/scores.csv",
        "delimiter": ";",
        "columns": {"path": "File", "label": "Score", "plate": "Barcode", "well": "Well"},
    })
    good, bad = split(list(read_source(source, tmp_path)))
    assert [(r.native_label, r.plate, r.well) for r in good] == [
        ("clear", "P1", "A01"), ("xtal", "P1", "A02")]
    # Paths are relative to the manifest's folder when no image_root is configured.
    assert good[0].path == str(tmp_path / "lab" / "img" / "P1_A01.jpg")
    assert good[0].image_id == "LAB/img/P1_A01"
    assert good[0].origin.endswith("scores.csv:2")
    assert [(b.reason, b.origin.rsplit(":", 1)[1]) for b in bad] == [
        ("missing_field", "4"), ("missing_field", "5"), ("bad_record", "6")]
    assert "empty label" in bad[1].detail and bad[1].path.endswith("P1_A04.jpg")


def test_csv_manifest_header_without_configured_column(tmp_path):
    (tmp_path / "m.csv").write_text("file,outcome\na.png,clear\n")
    source = make_source({"reader": "csv_manifest", "manifest": "m.csv",
                          "columns": {"path": "file", "label": "label"}})
    good, bad = split(list(read_source(source, tmp_path)))
    assert not good
    assert bad[0].reason == "bad_manifest" and "['label']" in bad[0].detail


def test_csv_manifest_missing_file_names_the_institution(tmp_path):
    source = make_source({"reader": "csv_manifest", "manifest": "nowhere/*.csv",
                          "columns": {"path": "f", "label": "l"}})
    with pytest.raises(FileNotFoundError, match=r"LAB: layout\.manifest matches no file"):
        list_units(source, tmp_path)


def test_jsonl_nested_fields_and_bad_lines(tmp_path):
    (tmp_path / "exp").mkdir()
    lines = [
        json.dumps({"image": {"file": "a/1.png"}, "score": {"text": "clear"}, "id": "x1"}),
        "",
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"image": {"file": "a/2.png"}, "score": {"text": "xtal"}, "id": "x2",
                    "plate": {"well": "B07"}}),
        json.dumps({"image": {}, "score": {"text": "xtal"}}),
    ]
    (tmp_path / "exp" / "export-1.jsonl").write_text("\n".join(lines) + "\n")
    source = make_source({
        "reader": "jsonl",
        "files": "exp/export-*.jsonl",
        "image_root": "images",
        "fields": {"path": "image.file", "label": "score.text", "image_id": "id",
                   "well": "plate.well"},
    })
    good, bad = split(list(read_source(source, tmp_path)))
    assert [(r.image_id, r.native_label, r.well) for r in good] == [
        ("x1", "clear", ""), ("x2", "xtal", "B07")]
    assert good[1].path == str(tmp_path / "images" / "a" / "2.png")
    assert [(b.reason, b.origin.rsplit(":", 1)[1]) for b in bad] == [
        ("bad_record", "3"), ("bad_record", "4"), ("missing_field", "6")]


def test_folder_per_label_with_path_pattern(tmp_path):
    for rel in ["clear/PL9/0001_day3.png", "xtal/PL9/0002_day3.jpg", "xtal/PL9/notes.txt",
                "xtal/PL10/0003_day7.PNG"]:
        path = tmp_path / "root" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    source = make_source({"reader": "folder_per_label", "root": "root",
                          "path_pattern": r"^(?P<plate>[^/]+)/(?P<well>\d{4})_"})
    units = list_units(source, tmp_path)
    assert [Path(u).name for u in units] == ["clear", "xtal"]
    good, bad = split(list(read_source(source, tmp_path)))
    assert not bad
    assert [(r.native_label, r.plate, r.well, r.image_id) for r in good] == [
        ("clear", "PL9", "0001", "LAB/PL9/0001_day3"),
        ("xtal", "PL10", "0003", "LAB/PL10/0003_day7"),
        ("xtal", "PL9", "0002", "LAB/PL9/0002_day3"),
    ]


def test_real_drops_manifest_reads_through_csv_layout(real_drops):
    source = make_source(
        {"reader": "csv_manifest", "manifest": str(real_drops / "labels.csv"),
         "columns": {"path": "filename", "label": "label"}},
        labels=("clear", "crystals", "precipitate", "other"), code="GSK",
    )
    good, bad = split(list(read_source(source, real_drops)))
    assert len(good) == 11 and all(Path(r.path).is_file() for r in good)
    # The unlabelled photograph is reported, not dropped.
    assert len(bad) == 1 and bad[0].reason == "missing_field" and "57465" in bad[0].path


def test_flatten_gives_what_dotted_keys_address():
    from components.readers import flatten

    record = {"image": {"file": "a.jpg", "meta": {"w": 640}}, "score": 70, "ok": True,
              "tags": ["x"], "note": None, "a.b": "unaddressable", "empty": {}}
    assert flatten(record) == {"image.file": "a.jpg", "image.meta.w": "640", "score": "70",
                               "ok": "True"}
