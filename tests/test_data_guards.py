"""Institution data that goes wrong: contained image paths and row-level errors.

Every image path a manifest or export names must stay inside the data folder, on a
local disk and on an object store, or be refused as ``outside_data_root`` without the
file ever being opened. A bad row (too few or too many cells, bytes that are not
UTF-8, a line that is not JSON) costs that row only. ``marco sources validate`` and
ingestion give the same verdict on every record, and in both the records seen add up
to the records used plus the records refused.
"""

from __future__ import annotations

import builtins
import json
import os
import uuid
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from components import filesystem, records
from components.catalogue import Catalogue, CatalogueError, load_catalogue, parse_source
from components.ingestion import report
from components.ingestion.beam_stages import (
    IngestImages,
    IngestionConfig,
    WriteIngestion,
    list_work_units,
    process_record,
)
from components.readers import BadRecord, Record, read_source
from components.records import (
    BAD_RECORD,
    DUPLICATE_ID,
    OUTSIDE_DATA_ROOT,
    UNDECODABLE_RECORD,
)
from components.tools.validation import validate_data
from pipeline.cli import main
from tests.ingestion_fixtures import drop_pixels, encode, make_planted_set

IMAGER_PREFIX = "\\\\imager\\RockMakerStorage"


@pytest.fixture(scope="module")
def png() -> bytes:
    return encode(Image.fromarray(drop_pixels(24, 32)), "PNG")


def lab_source(catalogue_dir: Path, layout: dict, **extra) -> Catalogue:
    """A one-institution catalogue (LAB: clear and xtal) written to ``catalogue_dir``."""
    data = {
        "code": "LAB",
        "name": "A lab",
        "imager": "imager",
        "setup": "setup",
        "layout": layout,
        "labels": [{"native": "clear", "class": "clear"}, {"native": "xtal", "class": "crystals"}],
        **extra,
    }
    catalogue_dir.mkdir(parents=True, exist_ok=True)
    (catalogue_dir / "LAB.yaml").write_text(yaml.safe_dump(data))
    return load_catalogue(catalogue_dir)


def csv_layout(manifest: str = "LAB/labels.csv", image_root: str = "LAB/images") -> dict:
    return {"reader": "csv_manifest", "manifest": manifest, "image_root": image_root,
            "columns": {"path": "file", "label": "label"}}


class OpenRecorder:
    """Records every local file opened (resolved), so a test can say a file never was."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self._open = builtins.open

    def __call__(self, file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            self.opened.append(os.path.realpath(file))
        return self._open(file, *args, **kwargs)


@pytest.fixture
def local_opens(monkeypatch) -> OpenRecorder:
    recorder = OpenRecorder()
    monkeypatch.setattr(builtins, "open", recorder)
    return recorder


def ingest(catalogue: Catalogue, data_dir: str, uri: str) -> tuple[report.IngestionSummary,
                                                                     list[dict[str, str]]]:
    """Run ImageExampleGen's Beam stages in this process; its counts and quarantine rows."""
    config = IngestionConfig(catalogue, data_dir)
    units = list_work_units(catalogue, data_dir)
    with beam.Pipeline() as pipeline:
        _ = pipeline | IngestImages(config, units) | WriteIngestion(uri)
    return report.read_summary(uri), report.read_quarantine(uri)


def verdicts_of_ingestion(rows: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(row["origin"], row["reason"]) for row in rows}


def verdicts_of_validation(validation) -> set[tuple[str, str]]:
    return {(p.origin, p.kind) for p in validation.problems}


def assert_counts_add_up(validation, summary: report.IngestionSummary, seen: dict[str, int]):
    """Records seen = used + refused, per institution, in validation and in ingestion."""
    for code, count in seen.items():
        mine = validation.sources[code]
        assert mine.records == count
        assert mine.usable + sum(mine.quarantined.values()) == count
        assert summary.per_institution[code] + summary.quarantined_per_institution[code] == count
        assert mine.usable == summary.per_institution[code]
    per_reason = Counter()
    for mine in validation.sources.values():
        per_reason.update(mine.quarantined)
    assert per_reason == summary.per_reason


# --- contained paths ------------------------------------------------------------


def test_joining_keeps_absolute_paths_and_containment_resolves_them():
    assert filesystem.join("gs://b/data", "/etc/passwd") == "/etc/passwd"
    assert filesystem.join("/data", "C:\\Imager\\a.jpg") == "C:\\Imager\\a.jpg"
    assert filesystem.join("/data", "\\\\imager\\share\\a.jpg") == "\\\\imager\\share\\a.jpg"
    assert filesystem.contains("gs://b/data", "gs://b/data/lab/x.png")
    assert not filesystem.contains("gs://b/data", "gs://b/data2/x.png")
    assert not filesystem.contains("gs://b/data", "gs://other/data/x.png")
    assert not filesystem.contains("gs://b/data", "s3://b/data/x.png")
    assert not filesystem.contains("gs://b/data", filesystem.join("gs://b/data/lab", "../../x"))
    assert not filesystem.contains("gs://b/data", "/data/x.png")
    assert not filesystem.contains("/data", "gs://b/data/x.png")
    assert not filesystem.contains("/data", "/data2/x.png")
    assert filesystem.contains("/data", "/data/lab/../lab/x.png")
    assert not filesystem.contains("/data", "/data/lab/../../etc/x.png")


@pytest.fixture
def escaping_set(tmp_path: Path, png: bytes) -> tuple[Path, Path, Catalogue, dict[int, str]]:
    """A data folder whose manifest names images outside it in every way, beside good ones.

    Returns (data folder, the outside file, catalogue, manifest line -> expected verdict).
    """
    outside = tmp_path / "outside" / "secret.png"
    outside.parent.mkdir()
    outside.write_bytes(png)
    data = tmp_path / "data"
    images = data / "LAB" / "images"
    (images / "plate1").mkdir(parents=True)
    for name in ("good.png", "also_good.png", "plate1/mapped.png"):
        (images / name).write_bytes(png)
    (images / "link.png").symlink_to(outside)
    (images / "alias.png").symlink_to(images / "good.png")  # a link inside: fine
    rows = {
        2: ("good.png", "clear", "ok"),
        3: ("../../../outside/secret.png", "clear", OUTSIDE_DATA_ROOT),
        4: (str(outside), "xtal", OUTSIDE_DATA_ROOT),
        5: ("link.png", "clear", OUTSIDE_DATA_ROOT),
        6: (IMAGER_PREFIX + "\\plate1\\mapped.png", "xtal", "ok"),
        7: ("\\\\otherimager\\share\\secret.png", "clear", OUTSIDE_DATA_ROOT),
        8: ("../images/also_good.png", "xtal", "ok"),
        9: ("alias.png", "clear", "ok"),
        10: (IMAGER_PREFIX + "\\..\\..\\..\\outside\\secret.png", "clear", OUTSIDE_DATA_ROOT),
    }
    lines = ["file,label"] + [f"{path},{label}" for path, label, _ in rows.values()]
    (data / "LAB" / "labels.csv").write_text("\n".join(lines) + "\n")
    catalogue = lab_source(tmp_path / "catalogue", csv_layout(),
                           path_prefixes={IMAGER_PREFIX: "LAB/images"})
    return data, outside, catalogue, {line: verdict for line, (_, _, verdict) in rows.items()}


def test_paths_outside_the_data_folder_are_refused_before_any_image_is_read(
    escaping_set, local_opens
):
    data, outside, catalogue, expected = escaping_set
    items = list(read_source(catalogue.get("LAB"), data))
    verdicts = {
        int(item.origin.rsplit(":", 1)[1]): item.reason if isinstance(item, BadRecord) else "ok"
        for item in items
    }
    assert verdicts == expected
    # What ImageExampleGen's example stage makes of each record.
    config = IngestionConfig(catalogue, str(data))
    outcomes = [process_record(item, config, {}) for item in items]
    assert [getattr(o, "reason", "ok") for o in outcomes] == list(expected.values())
    assert str((data / "LAB" / "images" / "good.png").resolve()) in local_opens.opened
    assert str(outside.resolve()) not in local_opens.opened
    mapped = next(i for i in items if isinstance(i, Record) and i.origin.endswith(":6"))
    assert mapped.path == str(data / "LAB" / "images" / "plate1" / "mapped.png")
    absolute = next(i for i in items if i.origin.endswith(":4"))
    assert absolute.detail.startswith(f"{outside} is outside the data folder {data}")
    assert absolute.detail.endswith("with path_prefixes in LAB.yaml")
    escaped = next(i for i in items if i.origin.endswith(":3"))
    assert str(outside) in escaped.detail


@pytest.mark.slow
def test_validation_and_ingestion_refuse_outside_paths_without_opening_them(
    escaping_set, local_opens, tmp_path
):
    data, outside, catalogue, expected = escaping_set
    validation = validate_data(catalogue, data, workers=1)
    summary, rows = ingest(catalogue, str(data), str(tmp_path / "artifact"))
    manifest = str(data / "LAB" / "labels.csv")
    refused = {(f"{manifest}:{line}", v) for line, v in expected.items() if v != "ok"}
    assert verdicts_of_validation(validation) == refused
    assert verdicts_of_ingestion(rows) == refused
    assert_counts_add_up(validation, summary, {"LAB": len(expected)})
    # The good images were read (so the recorder works); the outside one never was.
    assert str((data / "LAB" / "images" / "good.png").resolve()) in local_opens.opened
    assert str(outside.resolve()) not in local_opens.opened


def test_validate_command_names_the_outside_records(escaping_set, monkeypatch):
    data, _, catalogue, expected = escaping_set
    catalogue_dir = catalogue.get("LAB").file.parent
    result = CliRunner().invoke(main, ["sources", "validate", str(data), "--catalogue",
                                       str(catalogue_dir), "--workers", "1"])
    assert result.exit_code == 1, result.output
    outside = sum(1 for v in expected.values() if v == OUTSIDE_DATA_ROOT)
    assert f"LAB: {len(expected)} records ({len(expected) - outside} usable, {outside} refused)" \
        in result.output
    assert f"{outside} problem(s): outside_data_root {outside}" in result.output


class GfileRecorder:
    """tf.io.gfile, recording every file opened through it."""

    def __init__(self) -> None:
        import tensorflow as tf

        self._gfile = tf.io.gfile
        self.opened: list[str] = []

    def __getattr__(self, name):
        return getattr(self._gfile, name)

    def GFile(self, path, *args, **kwargs):
        self.opened.append(str(path))
        return self._gfile.GFile(path, *args, **kwargs)


@pytest.mark.slow
def test_object_store_rows_naming_another_bucket_are_refused_unopened(
    tmp_path, png, monkeypatch
):
    import tensorflow as tf

    bucket = f"ram://marco-{uuid.uuid4().hex}"
    other = f"{bucket}-other"
    data = f"{bucket}/data"

    def put(url: str, content: bytes | str) -> None:
        tf.io.gfile.makedirs(url.rsplit("/", 1)[0])
        with tf.io.gfile.GFile(url, "wb" if isinstance(content, bytes) else "w") as handle:
            handle.write(content)

    secrets = [f"{other}/secret.png", f"{bucket}/elsewhere/secret.png"]
    for url in secrets:
        put(url, png)
    put(f"{data}/LAB/images/good.png", png)
    put(f"{data}/LAB/images/plate1/mapped.png", png)
    rows = {
        2: ("good.png", "ok"),
        3: (secrets[0], OUTSIDE_DATA_ROOT),  # another bucket's URL
        4: (f"../../../../{secrets[0].split('://', 1)[1].split('/', 1)[0]}/secret.png",
            OUTSIDE_DATA_ROOT),  # up and out of the bucket
        5: ("../../../elsewhere/secret.png", OUTSIDE_DATA_ROOT),  # same bucket, not data
        6: ("/etc/hostname", OUTSIDE_DATA_ROOT),  # a local file below a gs://-like root
        7: (IMAGER_PREFIX + "\\plate1\\mapped.png", "ok"),
    }
    put(f"{data}/LAB/labels.csv",
        "file,label\n" + "".join(f"{path},clear\n" for path, _ in rows.values()))
    catalogue = lab_source(tmp_path / "catalogue", csv_layout(),
                           path_prefixes={IMAGER_PREFIX: "LAB/images"})
    recorder = GfileRecorder()
    monkeypatch.setattr(filesystem, "_gfile", lambda: recorder)
    local = OpenRecorder()
    monkeypatch.setattr(builtins, "open", local)

    manifest = f"{data}/LAB/labels.csv"
    refused = {(f"{manifest}:{n}", v) for n, (_, v) in rows.items() if v != "ok"}
    validation = validate_data(catalogue, data, workers=1)
    assert verdicts_of_validation(validation) == refused
    summary, quarantined = ingest(catalogue, data, str(tmp_path / "artifact"))
    assert verdicts_of_ingestion(quarantined) == refused
    assert_counts_add_up(validation, summary, {"LAB": len(rows)})
    result = CliRunner().invoke(main, ["sources", "validate", data, "--catalogue",
                                       str(tmp_path / "catalogue"), "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert "4 problem(s): outside_data_root 4" in result.output
    assert f"{data}/LAB/images/plate1/mapped.png" in recorder.opened
    assert not [url for url in recorder.opened if "secret" in url]
    assert "/etc/hostname" not in local.opened


def test_path_prefixes_in_the_catalogue(tmp_path):
    base = {"code": "LAB", "name": "n", "imager": "i", "setup": "s",
            "layout": csv_layout(), "labels": [{"native": "clear", "class": "clear"}]}
    source = parse_source(tmp_path / "LAB.yaml", {
        **base, "path_prefixes": {IMAGER_PREFIX: "LAB\\images\\", "gs://old/drops": "LAB"}})
    assert source.path_prefixes == ((IMAGER_PREFIX, "LAB/images"), ("gs://old/drops", "LAB"))
    assert records.map_prefix(IMAGER_PREFIX + "\\p1\\a.png", source.path_prefixes) == \
        "LAB/images/p1/a.png"
    assert records.map_prefix(IMAGER_PREFIX + "2\\p1\\a.png", source.path_prefixes) is None
    for prefixes, words in (
        ({"relative/path": "LAB"}, "must be absolute"),
        ({"/mnt/imager": "../elsewhere"}, "inside the data folder"),
        ({"/mnt/imager": "/elsewhere"}, "inside the data folder"),
        ({"/mnt/imager": ""}, "is empty"),
        (["/mnt/imager"], "must map absolute path prefixes"),
    ):
        with pytest.raises(CatalogueError, match="path_prefixes") as raised:
            parse_source(tmp_path / "LAB.yaml", {**base, "path_prefixes": prefixes})
        assert words in str(raised.value), prefixes


# --- row-level errors -----------------------------------------------------------


@pytest.fixture
def broken_rows(tmp_path: Path, png: bytes) -> tuple[Path, Catalogue, dict[str, str]]:
    """A CSV manifest (LAB) and a JSON-lines export (JLAB) with bad rows between good
    ones; returns (data folder, catalogue, origin -> expected refusal reason)."""
    data = tmp_path / "data"
    for code in ("LAB", "JLAB"):
        (data / code / "images").mkdir(parents=True)
        for i in range(6):
            (data / code / "images" / f"{i}.png").write_bytes(png)
    (data / "LAB" / "labels.csv").write_bytes(
        b"file,label,plate\n"
        b"0.png,clear,P1\n"
        b"1.png,xtal\n"  # one cell short: the values would shift
        b"2.png,clear,P1,extra\n"  # one cell too many
        b"3.png,clear,P\xff1\n"  # not UTF-8
        b"4.png,xtal,P1\n"
        b"5.png,clear,P\x001\n"  # a NUL byte: not a CSV row
        b"\n"
    )
    good = [json.dumps({"f": f"{i}.png", "s": "clear"}).encode() for i in range(6)]
    (data / "JLAB" / "export.jsonl").write_bytes(b"\n".join([
        good[0],
        b'{"f": "1.png", "s": "cl\xe9ar"}',  # Latin-1, not UTF-8
        b'{"f": "2.png", "s": ',  # cut short
        good[3],
        b'["3.png", "clear"]',  # JSON, but not an object
        good[4],
    ]) + b"\n")
    catalogue_dir = tmp_path / "catalogue"
    lab_source(catalogue_dir, csv_layout())
    jlab = yaml.safe_load((catalogue_dir / "LAB.yaml").read_text())
    jlab.update(code="JLAB", layout={"reader": "jsonl", "files": "JLAB/*.jsonl",
                                     "image_root": "JLAB/images",
                                     "fields": {"path": "f", "label": "s"}})
    (catalogue_dir / "JLAB.yaml").write_text(yaml.safe_dump(jlab))
    manifest, export = data / "LAB" / "labels.csv", data / "JLAB" / "export.jsonl"
    expected = {
        f"{manifest}:3": BAD_RECORD,
        f"{manifest}:4": BAD_RECORD,
        f"{manifest}:5": UNDECODABLE_RECORD,
        f"{manifest}:7": BAD_RECORD,
        f"{export}:2": UNDECODABLE_RECORD,
        f"{export}:3": BAD_RECORD,
        f"{export}:5": BAD_RECORD,
    }
    return data, load_catalogue(catalogue_dir), expected


def test_a_bad_row_is_one_refused_record_and_the_rest_is_read(broken_rows):
    data, catalogue, expected = broken_rows
    items = [i for s in catalogue for i in read_source(s, data)]
    bad = {i.origin: i.reason for i in items if isinstance(i, BadRecord)}
    assert bad == expected
    details = {i.origin.rsplit("/", 1)[1]: i.detail for i in items if isinstance(i, BadRecord)}
    assert details["labels.csv:3"] == "fewer cells than the header: 2 for 3 columns"
    assert details["labels.csv:4"] == "more cells than the header: 4 for 3 columns"
    assert details["labels.csv:5"].startswith("column 'plate': byte 0xff at character 2 ")
    assert details["export.jsonl:2"].startswith("byte 0xe9 at character ")
    good = sorted((i.institution, Path(i.path).name, i.origin.rsplit(":", 1)[1])
                  for i in items if isinstance(i, Record))
    assert good == [("JLAB", "0.png", "1"), ("JLAB", "3.png", "4"), ("JLAB", "4.png", "6"),
                    ("LAB", "0.png", "2"), ("LAB", "4.png", "6")]


@pytest.mark.slow
def test_bad_rows_are_counted_alike_by_validation_and_ingestion(broken_rows, tmp_path):
    data, catalogue, expected = broken_rows
    validation = validate_data(catalogue, data, workers=1)
    assert {(p.origin, p.kind) for p in validation.problems} == set(expected.items())
    summary, rows = ingest(catalogue, str(data), str(tmp_path / "artifact"))
    assert verdicts_of_ingestion(rows) == set(expected.items())
    assert_counts_add_up(validation, summary, {"LAB": 6, "JLAB": 6})
    assert (summary.examples, summary.quarantined) == (5, 7)


def test_a_file_name_that_is_not_utf8_is_one_refused_record(tmp_path, png):
    data = tmp_path / "data"
    (data / "FLAB" / "clear").mkdir(parents=True)
    (data / "FLAB" / "clear" / "fine.png").write_bytes(png)
    bad_name = os.fsdecode(b"caf\xe9.png")  # Latin-1, as an old imager wrote it
    (data / "FLAB" / "clear" / bad_name).write_bytes(png)
    catalogue = lab_source(tmp_path / "catalogue", {"reader": "folder_per_label", "root": "FLAB"})
    items = list(read_source(catalogue.get("LAB"), data))
    bad = [i for i in items if isinstance(i, BadRecord)]
    assert [(b.reason, b.origin.rsplit("/", 1)[1]) for b in bad] == [
        (UNDECODABLE_RECORD, "caf\\xe9.png")]
    assert "byte 0xe9" in bad[0].detail
    validation = validate_data(catalogue, data, workers=1)
    assert (validation.sources["LAB"].records, validation.sources["LAB"].usable) == (2, 1)
    assert validation.sources["LAB"].quarantined == {UNDECODABLE_RECORD: 1}


# --- one set of rules -------------------------------------------------------------


@pytest.mark.slow
def test_validation_and_ingestion_give_identical_verdicts(tmp_path, png):
    """The planted set (every image problem, unmapped and empty labels, a repeated row,
    one file under two labels) plus a repeated id whose kept copy is the later line, an
    id two institutions use, a short row and an image outside the data folder."""
    planted = make_planted_set(tmp_path / "data")
    data = planted.data_dir
    export = sorted((data / "MERCK").glob("*.jsonl"))[0]
    lines = export.read_text().splitlines()
    assert len(lines) >= 2
    while len(lines) < 9:
        lines.append(lines[-1].replace('"id": "', '"id": "pad-'))
    # Line 10 repeats line 2's id: as text, "...:10" < "...:2", so line 2 is the copy
    # ingestion drops; validation used to blame the copy it read second.
    clone = json.loads(lines[1])
    lines.append(json.dumps(clone))
    gsk_id = next(r.image_id for r in read_source(planted.catalogue.get("GSK"), data)
                  if isinstance(r, Record) and r.native_label == "clear")
    stolen = json.loads(lines[0])
    stolen["id"] = gsk_id  # MERCK reuses an id GSK derives from its paths
    lines.append(json.dumps(stolen))
    export.write_text("\n".join(lines) + "\n")
    manifest = data / "GSK" / "labels.csv"
    (tmp_path / "secret.jpg").write_bytes(encode(Image.fromarray(drop_pixels()), "JPEG"))
    with manifest.open("a") as handle:
        handle.write("../../../secret.jpg,clear\nonly-one-cell.jpg\n")

    validation = validate_data(planted.catalogue, data, workers=2)
    summary, rows = ingest(planted.catalogue, str(data), str(tmp_path / "artifact"))
    assert verdicts_of_validation(validation) == verdicts_of_ingestion(rows)
    seen = Counter(i.institution for s in planted.catalogue for i in read_source(s, data))
    assert_counts_add_up(validation, summary, dict(seen))
    reasons = Counter(kind for _, kind in verdicts_of_validation(validation))
    assert reasons[OUTSIDE_DATA_ROOT] == 1 and reasons[BAD_RECORD] == 1
    assert reasons[DUPLICATE_ID] == 4  # the planted two, MERCK's and GSK's
    blamed = {p.origin for p in validation.problems if p.kind == DUPLICATE_ID}
    assert f"{export}:2" in blamed and f"{export}:{len(lines) - 1}" not in blamed
    assert validation.sources["MERCK"].collisions == {"GSK": 1}
