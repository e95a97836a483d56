"""``marco sources add``: layout detection, the draft catalogue file, refusals, guard rails,
and a sixth institution taken from its own files to transformed examples."""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from components.catalogue import CatalogueError, load_catalogue, load_source_file, parse_source
from components.ingestion import tfexample
from components.names import CLASS_NAMES
from components.readers import Record, read_source
from components.tools.drafting import (
    Detection,
    DraftError,
    add_source,
    check_draft_text,
    detect_path_pattern,
    inspect_institution,
    known_labels,
    render_draft,
    sniff_delimiter,
    suggest_class,
)
from components.tools.validation import format_report, validate_data
from pipeline.cli import main
from tests.ingestion_fixtures import drop_pixels, make_synthetic

LOCAL_BEAM_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def _image(path: Path, seed: int = 0, fmt: str = "JPEG", size: tuple[int, int] = (40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(drop_pixels(size[1], size[0], seed)).save(path, fmt)


def _entry(lines: list[str], native: str) -> int:
    """The index of the line that opens the label entry of ``native`` in a draft."""
    found = [i for i, line in enumerate(lines)
             if line.startswith("  - native: ") and lines[i + 1].startswith("    class:")
             and yaml.safe_load(line.split(": ", 1)[1]) == native]
    assert len(found) == 1, native
    return found[0]


def _fill(text: str, classes: dict[str, str], **top: str) -> str:
    """Fill a draft as a person does in an editor: write each class after its label."""
    lines = text.splitlines()
    for native, class_name in classes.items():
        lines[_entry(lines, native) + 1] = f"    class: {class_name}"
    text = "\n".join(lines) + "\n"
    for key, value in top.items():
        text, n = re.subn(rf"(?m)^{key}:[^\n]*$", f"{key}: {value}", text)
        assert n == 1, key
    return text


def _drop_label(text: str, native: str) -> str:
    """Delete one label's entry (its comment lines, native and class) from a catalogue file."""
    lines = text.splitlines()
    start = end = _entry(lines, native)
    while lines[start - 1].startswith("  # "):
        start -= 1
    del lines[start : end + 2]
    return "\n".join(lines) + "\n"


def _empty_catalogue(tmp_path: Path) -> Path:
    folder = tmp_path / "catalogue"
    folder.mkdir()
    return folder


def _read_examples(split_dir: Path) -> list[dict]:
    out = []
    for path in sorted(split_dir.glob("*.gz")):
        with gzip.open(path, "rb") as handle:
            out.extend(tfexample.decode_example(r) for r in tfexample.read_tfrecords(handle))
    return out


def _records(draft_path: Path, data_root: Path) -> list[Record]:
    return [r for r in read_source(load_source_file(draft_path), data_root)
            if isinstance(r, Record)]


@pytest.fixture(scope="module")
def five_set(tmp_path_factory) -> Path:
    """A small synthetic data set in the five institutions' own layouts (read only)."""
    data = tmp_path_factory.mktemp("five") / "data"
    make_synthetic(data, 60)
    return data


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("code", ["BMS", "CSIRO", "GSK", "HWMRI", "MERCK"])
def test_detection_finds_the_layout_each_of_the_five_declares(five_set, catalogue_copy, code):
    """Drafted from its files alone, each institution reads exactly as its own file says."""
    shipped = load_source_file(catalogue_copy / f"{code}.yaml")
    (catalogue_copy / f"{code}.yaml").unlink()
    draft = add_source(code, five_set / code, catalogue_copy, name="n", imager="i", setup="s")
    found = draft.detection
    assert found.reader == shipped.layout.reader
    assert found.record_fields == dict(shipped.layout.record_fields)
    for key in ("delimiter", "image_root", "root"):
        assert found.options.get(key, shipped.layout.option(key)) == shipped.layout.option(key)
    draft.path.write_text(_fill(draft.text, {
        native: shipped.labels[[lab.native for lab in shipped.labels].index(native)].class_name
        for native in found.labels
    }))

    def rows(source) -> list[tuple]:
        records = [r for r in read_source(source, five_set) if isinstance(r, Record)]
        return sorted((r.image_id, r.path, r.native_label, r.plate, r.well) for r in records)

    drafted = load_catalogue(catalogue_copy).get(code)
    assert rows(drafted) == rows(shipped)
    assert drafted.label_map.items() <= shipped.label_map.items()



def test_semicolon_manifest_with_unusual_columns_and_images_elsewhere(tmp_path: Path):
    """Column roles come from values and names; image paths resolve from the lab folder."""
    lab = tmp_path / "data" / "KYOTO"
    words = ["Clear", "Xtal", "PPT", "Xtal", "PPT", "PPT"]
    rows = []
    for i in range(30):
        name = f"img/T{i // 12:03d}/T{i // 12:03d}-{'ABCDEFGH'[i % 8]}{i % 12 + 1}.jpg"
        _image(lab / name, seed=i)
        rows.append([name, words[i % len(words)], f"T{i // 12:03d}",
                     f"{'ABCDEFGH'[i % 8]}{i % 12 + 1}", f"2021-03-{i % 28 + 1:02d} 10:{i:02d}",
                     "re-image" if i == 3 else ""])
    (lab / "meta").mkdir()
    with (lab / "meta" / "scoring.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["Drop Image", "Verdict", "Tray Barcode", "Drop Position",
                         "Inspection Date", "Comments"])
        writer.writerows(rows)

    found = inspect_institution(lab, code="KYOTO")
    assert found.reader == "csv_manifest"
    assert found.options["manifest"] == "KYOTO/meta/scoring.csv"
    assert found.options["delimiter"] == ";"
    assert found.options["image_root"] == "KYOTO"
    assert found.options["columns"] == {
        "path": "Drop Image", "label": "Verdict", "plate": "Tray Barcode",
        "well": "Drop Position", "imaged_at": "Inspection Date",
    }
    assert found.ignored == ["Comments"]
    assert "path_pattern" not in found.options  # plate and well come from columns
    assert found.records == found.files_found == 30
    assert found.labels == Counter({"PPT": 15, "Xtal": 10, "Clear": 5})
    assert found.imaging == {"colour": "rgb", "width": 40, "height": 30, "formats": ["jpeg"]}


def test_an_export_naming_the_imagers_own_storage_gets_path_prefixes(tmp_path: Path):
    """Rock Maker-style absolute paths on the imager's share: the draft maps their
    prefix onto the folder the images were copied to, and every record then reads an
    image inside the data folder."""
    data = tmp_path / "data"
    lab = data / "ROCK"
    share = "\\\\imager\\RockMakerStorage\\WellImages"
    rows = []
    for i in range(12):
        plate, well = f"{1000 + i // 6}", f"{'ABCDEFGH'[i % 8]}{i % 12 + 1:02d}"
        _image(lab / "copied" / "images" / plate / f"{well}.jpg", seed=i)
        rows.append([f"{share}\\{plate}\\{well}.jpg", ["Clear", "Crystals"][i % 2]])
    with (lab / "scores.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImagePath", "Score"])
        writer.writerows(rows)

    found = inspect_institution(lab, code="ROCK", data_root=data)
    assert found.path_prefixes == {share: "ROCK/copied/images"}
    assert found.records == found.files_found == 12
    assert any("map onto the data folder with path_prefixes" in n for n in found.notes)

    catalogue = _empty_catalogue(tmp_path)
    draft = add_source("ROCK", lab, catalogue, data_root=data)
    assert yaml.safe_load(draft.text)["path_prefixes"] == {share: "ROCK/copied/images"}
    filled = _fill(draft.text, {"Clear": "clear", "Crystals": "crystals"},
                   name="Rock lab", imager="Rock Imager 1000", setup="sitting drop")
    draft.path.write_text(filled)
    records = _records(draft.path, data)
    assert len(records) == 12
    assert all(Path(r.path).is_file() and (lab / "copied") in Path(r.path).parents
               for r in records)


def test_a_path_no_file_system_takes_is_a_missing_image_not_a_crash(tmp_path: Path):
    """A manifest row whose path is longer than any file name can be counts as an
    image not found; the rest of the folder is drafted."""
    lab = tmp_path / "data" / "LONG"
    rows = [[f"img/{i}.jpg", ["Clear", "Crystals"][i % 2]] for i in range(6)]
    for i in range(6):
        _image(lab / "img" / f"{i}.jpg", seed=i)
    rows.append(["img/" + "x" * 5000 + ".jpg", "Clear"])
    rows.append(["/" + "y" * 5000 + "/z.jpg", "Clear"])
    with (lab / "scores.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label"], *rows])

    found = inspect_institution(lab, code="LONG", data_root=tmp_path / "data")
    assert found.records == 7 and found.files_found == 6
    assert found.bad_records == Counter({"outside_data_root": 1})
    assert found.path_prefixes == {}


def test_tab_manifest_with_ids_and_plate_well_read_from_file_names(tmp_path: Path):
    data = tmp_path / "data"
    lab = data / "OSAKA"
    lines = ["file name\tresult\timage ID"]
    for i in range(24):
        name = f"PL{i // 8:04d}_{'AB'[i % 2]}{i % 8 + 1:02d}_20200101-10{i:02d}00.png"
        _image(lab / "pics" / name, seed=i, fmt="PNG")
        lines.append(f"{name}\t{['clear', 'xtal + ppt', 'junk'][i % 3]}\tOS-{1000 + i}")
    (lab / "pics" / "index.tsv").write_text("\n".join(lines) + "\n")

    draft = add_source("OSAKA", lab, _empty_catalogue(tmp_path))
    found = draft.detection
    assert found.options["delimiter"] == "\t"
    assert found.options["image_root"] == "OSAKA/pics"
    assert found.options["columns"] == {"path": "file name", "label": "result",
                                        "image_id": "image ID"}
    assert found.options["path_pattern"].startswith("^(?P<plate>")
    # The draft reads the plate and well back from each path through the real reader.
    filled = _fill(draft.text, {"clear": "clear", "xtal + ppt": "crystals", "junk": "other"},
                   name="Osaka", imager="Rock Imager", setup="Sitting drop")
    draft.path.write_text(filled)
    records = sorted(_records(draft.path, data), key=lambda r: r.image_id)
    assert len(records) == 24
    assert (records[0].image_id, records[0].plate, records[0].well) == ("OS-1000", "PL0000", "A01")
    assert (records[9].plate, records[9].well) == ("PL0001", "B02")
    assert records[9].imaged_at == "20200101-100900"


def test_nested_json_lines_in_several_files_become_one_glob(tmp_path: Path):
    data = tmp_path / "data"
    lab = data / "LYON"
    calls = ["clear", "crystals+precipitate", "crystalline precipitate", "clear"]
    lab.mkdir(parents=True)
    for month in (1, 2):
        with (lab / f"lims-export-2021-{month:02d}.jsonl").open("w") as handle:
            for i in range(12):
                rel = f"{month}/{i:03d}.jpg"
                _image(lab / "raw" / rel, seed=i)
                handle.write(json.dumps({
                    "sample": {"image": {"uri": rel, "taken": f"2021-{month:02d}-03T10:{i:02d}"}},
                    "annotation": {"human": {"call": calls[i % 4]}, "by": f"user{i % 5}"},
                    "plate": {"code": f"LY{month}", "well": f"C{i + 1}"},
                    "tags": ["a", "b"],
                }) + "\n")
    (lab / "README.txt").write_text("exported from the LIMS\n")

    found = inspect_institution(lab, code="LYON")
    assert found.reader == "jsonl"
    assert found.options["files"] == "LYON/lims-export-2021-0*.jsonl"
    assert found.options["image_root"] == "LYON/raw"
    assert found.options["fields"] == {
        "path": "sample.image.uri", "label": "annotation.human.call", "plate": "plate.code",
        "well": "plate.well", "imaged_at": "sample.image.taken",
    }
    assert "annotation.by" in found.ignored
    assert found.labels == Counter({"clear": 12, "crystals+precipitate": 6,
                                    "crystalline precipitate": 6})
    assert found.files_found == 24


def test_folder_per_label_below_a_container_folder(tmp_path: Path):
    data = tmp_path / "data"
    root = data / "BERN" / "images"
    counts = {"klar": 4, "Kristalle": 3, "Niederschlag": 5}
    for label, n in counts.items():
        for i in range(n):
            _image(root / label / f"P{i % 2:05d}" / f"{i + 1:04d}_x.png", seed=i, fmt="PNG",
                   size=(32, 32))
    _image(root / "stray.jpg")

    found = inspect_institution(data / "BERN", code="BERN")
    assert found.reader == "folder_per_label"
    assert found.options["root"] == "BERN/images"
    assert found.options["extensions"] == ["png"]
    assert found.options["path_pattern"] == r"^(?P<plate>[^/_]+)/(?P<well>\d{4})_"
    assert found.labels == Counter(counts)
    assert any("1 images lie directly in BERN/images" in note for note in found.notes)


def test_a_doubtful_label_column_is_named_and_can_be_chosen(tmp_path: Path):
    lab = tmp_path / "data" / "PISA"
    rows = ["image|score|reviewer call"]
    for i in range(12):
        _image(lab / f"{i}.jpg", seed=i)
        rows.append(f"{i}.jpg|{['clear', 'xtal'][i % 2]}|{['C', 'X', 'P'][i % 3]}")
    (lab / "scores.txt").write_text("\n".join(rows) + "\n")

    guessed = inspect_institution(lab, code="PISA")
    assert guessed.options["delimiter"] == "|"
    assert guessed.record_fields["label"] == "score"
    assert any("other possible label columns: 'reviewer call' (3 distinct values)" in note
               for note in guessed.notes)
    chosen = inspect_institution(lab, code="PISA", label_column="reviewer call")
    assert chosen.record_fields["label"] == "reviewer call"
    assert chosen.labels == Counter({"C": 4, "X": 4, "P": 4})


def test_delimiter_and_path_pattern_helpers():
    assert sniff_delimiter(["a|b|c\n", "1|2|3\n"]) == "|"
    assert sniff_delimiter(["path;label\n", "x,1.jpg;clear\n"]) == ";"
    assert sniff_delimiter(["just one column\n"]) is None
    paths = [f"P{k}/P{k}_{w}_stamp.jpg" for k in (1, 1, 2) for w in ("A01", "H12")]
    pattern = detect_path_pattern(paths, ["plate", "well"])
    match = re.search(pattern, "P7/P7_D05_stamp.jpg")
    assert match and match["plate"] == "P7" and match["well"] == "D05"
    assert detect_path_pattern(["a.jpg", "b/c_d.jpg", "e_f_g.jpg"], ["well"]) is None


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("xtal", "crystals"),
        ("Micro XTALS", "crystals"),
        ("empty", "clear"),
        ("ppt", "precipitate"),
        ("heavy precip.", "precipitate"),
        ("xtal+ppt", "crystals"),
        ("phase sep + ppt", "precipitate"),
        ("no drop", "other"),
        ("Clear", "clear"),  # as other institutions map it
        ("no crystals", None),
        ("banana", None),
    ],
)
def test_class_suggestions_from_words_and_the_catalogue(word, expected):
    from schemas import SOURCES_DIR

    suggestion = suggest_class(word, known_labels(SOURCES_DIR))
    assert (suggestion.class_name if suggestion else None) == expected


def test_numeric_scores_get_a_note_and_no_class():
    suggestion = suggest_class("70", {"70": [("MERCK", "crystals")]})
    assert suggestion.class_name is None and "numeric" in suggestion.reason


# --------------------------------------------------------------------------- the draft


def test_draft_lists_every_label_with_blank_classes_and_the_loader_refuses_it(
    tmp_path: Path, catalogue_copy: Path
):
    data = tmp_path / "data"
    lab = data / "ZURICH"
    labels = ["xtal"] * 3 + ["ppt"] * 5 + ["empty"] * 2
    lab.mkdir(parents=True)
    with (lab / "list.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["picture", "score"])
        for i, label in enumerate(labels):
            _image(lab / f"{i}.jpg", seed=i)
            writer.writerow([f"{i}.jpg", label])

    draft = add_source("ZURICH", lab, catalogue_copy, name="Zurich lab")
    document = yaml.safe_load(draft.text)
    assert document["code"] == "ZURICH" and document["name"] == "Zurich lab"
    assert document["imager"] is None and document["setup"] is None
    assert "marco_source_id" not in document
    assert [e["native"] for e in document["labels"]] == ["ppt", "xtal", "empty"]
    assert all(e["class"] is None for e in document["labels"])  # never filled in
    assert "# 'ppt': 5 images" in draft.text and "# 'empty': 2 images" in draft.text
    assert "# suggestion: crystals (the word 'xtal')" in draft.text
    assert draft.missing == ["imager", "setup"]

    with pytest.raises(CatalogueError) as raised:
        load_catalogue(catalogue_copy)
    message = str(raised.value)
    assert str(draft.path) in message and ": imager: is empty" in message
    half = _fill(draft.text, {"ppt": "precipitate"}, imager="Minstrel", setup="Sitting drop")
    draft.path.write_text(half)
    with pytest.raises(CatalogueError) as raised:
        load_catalogue(catalogue_copy)
    message = str(raised.value)
    assert f"{draft.path}: labels[1].class: no class given for native label 'xtal'" in message
    assert "also without a class: 'empty'" in message
    draft.path.write_text(_fill(half, {"xtal": "crystals", "empty": "clear"}))
    source = load_catalogue(catalogue_copy).get("ZURICH")
    assert source.label_map == {"ppt": 3, "xtal": 1, "empty": 0}
    assert len(_records(draft.path, data)) == 10


def test_draft_text_reads_back_awkward_labels_exactly(tmp_path: Path):
    awkward = ["yes", "null", "100", "1e3", "a: b", "# hash", "it's", 'say "x"', "tab\there",
               "ünïcode", " padded "]
    detection = Detection(
        reader="folder_per_label",
        options={"root": "X Lab's/root", "extensions": ["jpg"]},
        described_from="X",
        labels=Counter({label: i + 1 for i, label in enumerate(awkward)}),
        examples={label: [f"X/{label}/1.jpg"] for label in awkward},
    )
    text = render_draft("XLAB", detection, name="X: the lab", imager=None, setup=None,
                        suggestions={}, data_root_display="/data\nx", command="marco")
    order = sorted(awkward, key=lambda n: (-detection.labels[n], n))
    check_draft_text(tmp_path / "XLAB.yaml", text, order)
    data = yaml.safe_load(text)
    assert data["layout"]["root"] == "X Lab's/root" and data["name"] == "X: the lab"
    filled = dict(data, imager="i", setup="s",
                  labels=[dict(e, **{"class": CLASS_NAMES[2]}) for e in data["labels"]])
    assert parse_source(tmp_path / "XLAB.yaml", filled).label_map == dict.fromkeys(awkward, 2)


def test_every_file_type_found_and_not_used_is_counted_with_the_reason(tmp_path: Path):
    """Nothing in the lab's folder is passed over in silence."""
    lab = tmp_path / "data" / "OXFORD"
    for label, n in (("clear", 3), ("xtal", 2)):
        for i in range(n):
            _image(lab / "images" / label / f"{i}.jpg", seed=i)
    for name in ("scoring-guide.pdf", "plate-map.pdf"):
        (lab / name).write_bytes(b"%PDF-1.4\n")
    (lab / "LICENSE").write_text("CC BY 4.0\n")
    (lab / "images" / "xtal" / "3.tif").write_bytes(b"II*\x00")
    (lab / "instrument.xml").write_text(
        '<Instrument model="RI1000"><Lamp hours="1200"/></Instrument>\n')
    (lab / "owners.csv").write_text("plate,owner\nP1,ann\nP2,bob\n")
    catalogue = _empty_catalogue(tmp_path)

    result = CliRunner().invoke(main, ["sources", "add", "OXFORD", "--from", str(lab),
                                       "--catalogue", str(catalogue)])
    assert result.exit_code == 0, result.output
    assert "folder_per_label from OXFORD/images" in result.output
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped ")]
    assert skipped == [
        "skipped without an extension: 1 file, not images or label records",
        "skipped .csv: 1 file, label records the layout does not read: no column holds "
        "image file names (.jpg, .jpeg, .png); columns: 'plate', 'owner'",
        "skipped .pdf: 2 files, not images or label records",
        "skipped .tif: 1 file, images ingestion cannot read (JPEG, PNG only)",
        "skipped .xml: 1 file, label records the layout does not read: not a table, "
        "JSON lines or XML export naming images",
    ]


def test_refusals_name_the_problem(tmp_path: Path, catalogue_copy: Path):
    lab = tmp_path / "data" / "NEWLAB"
    for label in ("a", "b"):
        _image(lab / label / "1.jpg")
    runner = CliRunner()

    def add(*args: str):
        return runner.invoke(main, ["sources", "add", *args, "--from", str(lab),
                                    "--catalogue", str(catalogue_copy)])

    for bad in ("newlab", "6LAB", "X", "NEW-LAB"):
        result = add(bad)
        assert result.exit_code == 1 and "must be 2-16 upper-case" in result.output, bad
    taken = add("GSK")
    assert taken.exit_code == 1
    assert f"institution GSK is already in the catalogue ({catalogue_copy / 'GSK.yaml'})" in (
        taken.output
    )
    first = add("NEWLAB")
    assert first.exit_code == 0, first.output
    assert "folder_per_label from NEWLAB" in first.output
    assert f"wrote {catalogue_copy / 'NEWLAB.yaml'}" in first.output
    assert f"--catalogue {catalogue_copy}" in first.output
    (catalogue_copy / "NEWLAB.yaml").write_text("# edited by hand\n")
    again = add("NEWLAB")
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
    assert (catalogue_copy / "NEWLAB.yaml").read_text() == "# edited by hand\n"
    forced = runner.invoke(main, ["sources", "add", "NEWLAB", "--from", str(lab),
                                  "--catalogue", str(catalogue_copy), "--force"])
    assert forced.exit_code == 0 and "reader: folder_per_label" in (
        catalogue_copy / "NEWLAB.yaml").read_text()

    empty = tmp_path / "data" / "EMPTY"
    (empty / "notes").mkdir(parents=True)
    (empty / "notes" / "plates.csv").write_text("plate,owner\nP1,ann\n")
    with pytest.raises(DraftError, match="no image files"):
        add_source("EMPTY", empty, catalogue_copy)
    _image(empty / "loose.jpg")
    with pytest.raises(DraftError) as raised:
        add_source("EMPTY", empty, catalogue_copy)
    assert "no folders of images to read as labels" in str(raised.value)
    assert "plates.csv: no column holds image file names" in str(raised.value)
    with pytest.raises(DraftError, match="--label-column 'Score' is not a column"):
        (lab / "m.csv").write_text("f,l\na/1.jpg,a\nb/1.jpg,b\n")
        add_source("NEWLAB2", lab, catalogue_copy, label_column="Score")


# --------------------------------------------------------------------------- guard rails


def test_guard_rails_id_collisions_class_mix_and_unused_labels(
    tmp_path: Path, catalogue_copy: Path, five_set: Path
):
    """A lab whose ids are Merck's and whose labels are almost all 'other'."""
    data = tmp_path / "data"
    shutil.copytree(five_set, data)
    merck_ids = [json.loads(line)["id"] for f in sorted((data / "MERCK").glob("*.jsonl"))
                 for line in f.read_text().splitlines()]
    lab = data / "OTHERLAB"
    rows = ["file,call,id"]
    for i in range(55):
        _image(lab / f"{i}.jpg", seed=i)
        image_id = merck_ids[i] if i < 4 else f"OL-{i}"
        rows.append(f"{i}.jpg,{'murky' if i else 'clear'},{image_id}")
    (lab / "calls.csv").write_text("\n".join(rows) + "\n")
    draft = add_source("OTHERLAB", lab, catalogue_copy, name="n", imager="i", setup="s")
    filled = _fill(draft.text, {"murky": "other", "clear": "clear"})
    filled = filled.replace("labels:\n", "labels:\n  - native: 'dusty'\n    class: other\n")
    draft.path.write_text(filled)

    report = validate_data(load_catalogue(catalogue_copy), data, check_images=False)
    mine = report.sources["OTHERLAB"]
    assert mine.collisions == {"MERCK": 4}
    assert report.problem_counts() == {"duplicate_image_id": 4}
    assert any("class mix differs widely" in w for w in mine.warnings)
    assert any("'dusty' is mapped in OTHERLAB.yaml but no record uses it" in w
               for w in mine.warnings)
    text = format_report(report)
    assert "error: 4 image id(s) already used by institution MERCK" in text
    assert f"'{merck_ids[0]}'" in text
    assert report.to_dict()["institutions"]["OTHERLAB"]["image_id_collisions"] == {"MERCK": 4}


# --------------------------------------------------------------------------- end to end

# The sixth lab's own scoring words and what they mean (known only to this test, as
# the lab's scoring guide is known only to the person filling in the draft).
SIXTH = "LAB6"
SIXTH_CLASSES = {
    "empty": "clear",
    "xtal": "crystals",
    "micro xtal": "crystals",
    "xtal+ppt": "crystals",
    "ppt": "precipitate",
    "phase sep": "other",
}


def _sixth_institution_files(out: Path) -> dict:
    """The sixth lab's files: a tab-separated export in its own folder, images in another,
    column names and words none of the five use, ids, plates, wells and times."""
    from components.catalogue import Catalogue
    from components.tools.synth.writer import generate

    truth = {
        "code": SIXTH, "name": "Sixth laboratory", "imager": "Rigaku Minstrel HT",
        "setup": "Hanging drop",
        "imaging": {"colour": "rgb", "width": 640, "height": 480, "formats": ["jpeg"]},
        "layout": {
            "reader": "csv_manifest", "manifest": f"{SIXTH}/export/scoring.tsv",
            "image_root": f"{SIXTH}/drops", "delimiter": "\t",
            "columns": {"path": "Image Location", "label": "Observation",
                        "image_id": "Sample ID", "plate": "Plate Barcode",
                        "well": "Drop Position", "imaged_at": "Imaging Time"},
        },
        "labels": [{"native": n, "class": c} for n, c in SIXTH_CLASSES.items()],
    }
    source = parse_source(out / "truth.yaml", truth)
    summary = generate(out, 30, seed=5, catalogue=Catalogue((source,)), scale=0.25, workers=1)
    return summary["institutions"][SIXTH]


@pytest.mark.e2e
@pytest.mark.slow
def test_sixth_institution_from_files_to_transformed_examples(tmp_path: Path, catalogue_copy):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tensorflow_metadata.proto.v0 import statistics_pb2
    from tfx import v1 as tfx

    from components.names import IMAGE_ID_KEY, INSTITUTION_KEY, LABEL_KEY, NATIVE_LABEL_KEY
    from pipeline.config import PRESETS, PipelineConfig
    from pipeline.pipeline import create_pipeline
    from schemas import SCHEMA_FILE

    data = tmp_path / "data"
    make_synthetic(data, 60)
    sixth = _sixth_institution_files(tmp_path / "sixth")
    assert all(sixth["labels"].values()), sixth["labels"]
    shutil.move(str(tmp_path / "sixth" / SIXTH), str(data / SIXTH))
    runner = CliRunner()

    # 1. Draft the catalogue file from the files alone.
    added = runner.invoke(main, [
        "sources", "add", SIXTH, "--from", str(data / SIXTH), "--catalogue", str(catalogue_copy),
        "--name", "Sixth laboratory", "--imager", "Rigaku Minstrel HT", "--setup", "Hanging drop",
    ])
    assert added.exit_code == 0, added.output
    assert "csv_manifest from LAB6/export/scoring.tsv" in added.output
    assert "delimiter: tab" in added.output and "image_root: LAB6/drops" in added.output
    for role, column in (("path", "Image Location"), ("label", "Observation"),
                         ("image_id", "Sample ID"), ("plate", "Plate Barcode"),
                         ("well", "Drop Position"), ("imaged_at", "Imaging Time")):
        assert re.search(rf"{role}\s+<- column '{column}'", added.output), role
    assert f"{sixth['images']} records, {sixth['images']} image files found" in added.output
    draft_path = catalogue_copy / f"{SIXTH}.yaml"
    draft = draft_path.read_text()
    for native, count in sixth["labels"].items():
        assert f"# {native!r}: {count} image" in draft, native

    # 2. Validating too early names the file, the key and the labels still without a class.
    early = runner.invoke(main, ["sources", "validate", str(data), "--catalogue",
                                 str(catalogue_copy), "--no-images"])
    assert early.exit_code == 1
    assert f"{draft_path}: labels[0].class: no class given for native label" in early.output

    # 3. The engineer fills in the classes from the lab's scoring guide; validation passes.
    filled = _fill(draft, SIXTH_CLASSES)
    draft_path.write_text(filled)
    valid = runner.invoke(main, ["sources", "validate", str(data), "--catalogue",
                                 str(catalogue_copy), "--workers", "1"])
    assert valid.exit_code == 0, valid.output
    assert f"{SIXTH}: {sixth['images']} records" in valid.output
    assert "no problems (images decoded)" in valid.output

    # 4. The schema, regenerated into a copy, names the new institution and its words.
    schema = tmp_path / "schema.pbtxt"
    project_schema = SCHEMA_FILE.read_bytes()
    schema.write_bytes(project_schema)
    schema_args = ["--catalogue", str(catalogue_copy), "--schema-file", str(schema)]
    stale = runner.invoke(main, ["schema", "check", *schema_args])
    assert stale.exit_code == 1 and SIXTH in stale.output
    updated = runner.invoke(main, ["schema", "update", *schema_args])
    assert updated.exit_code == 0 and "6 institutions" in updated.output, updated.output
    assert runner.invoke(main, ["schema", "check", *schema_args]).exit_code == 0
    assert SCHEMA_FILE.read_bytes() == project_schema

    # 5. The pipeline, with no other change, ingests, validates, slices and labels it.
    root = tmp_path / "run"
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(root / "metadata.db")
    )
    config = PipelineConfig(
        pipeline_root=str(root / "pipeline"), preset=PRESETS["tiny"], data_dir=str(data),
        catalogue_dir=str(catalogue_copy), schema_file=str(schema), eval_percent=20,
        beam_pipeline_args=LOCAL_BEAM_ARGS,
    )
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, metadata, through="transform"))

    store = metadata_store.MetadataStore(metadata)
    states = {
        context.name.split(".", 1)[1]: [
            e.last_known_state for e in store.get_executions_by_context(context.id)
        ]
        for context in store.get_contexts_by_type("node")
    }
    complete = metadata_store_pb2.Execution.COMPLETE
    for node in ("ImageExampleGen", "StatisticsGen", "ExampleValidator", "AnomalyGate",
                 "Transform"):
        assert states[node] == [complete], node
    [examples] = [a for a in store.get_artifacts_by_type("Examples")
                  if "ImageExampleGen" in a.uri]
    per_institution = json.loads(examples.custom_properties["examples_per_institution"]
                                 .string_value)
    assert per_institution[SIXTH] == sixth["images"]
    assert examples.custom_properties["num_quarantined"].int_value == 0
    [statistics] = store.get_artifacts_by_type("ExampleStatistics")
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        Path(statistics.uri, "Split-train", "FeatureStats.pb").read_bytes()
    )
    sliced = next(d for d in stats.datasets if d.name == f"institution_{SIXTH}")
    assert 0 < sliced.num_examples <= sixth["images"]

    raw = {
        e[IMAGE_ID_KEY][0]: e
        for split in ("train", "eval")
        for e in _read_examples(Path(examples.uri, f"Split-{split}"))
    }
    [transformed] = [a for a in store.get_artifacts_by_type("Examples") if "Transform" in a.uri]
    arrived: Counter = Counter()
    for split in ("train", "eval"):
        for example in _read_examples(Path(transformed.uri, f"Split-{split}")):
            original = raw[example[IMAGE_ID_KEY][0]]
            if original[INSTITUTION_KEY] != [SIXTH.encode()]:
                continue
            native = original[NATIVE_LABEL_KEY][0].decode()
            assert example[LABEL_KEY] == [CLASS_NAMES.index(SIXTH_CLASSES[native])], native
            assert example[IMAGE_ID_KEY][0].startswith(b"LAB6-")  # the lab's own ids
            arrived[native] += 1
    assert arrived == Counter(sixth["labels"])

    # 6. The same files with one label left out of the catalogue stop at validation,
    # naming the label and how many records carry it.
    draft_path.write_text(_drop_label(filled, "phase sep"))
    unmapped = runner.invoke(main, ["sources", "validate", str(data), "--catalogue",
                                    str(catalogue_copy), "--no-images"])
    assert unmapped.exit_code == 1
    count = sixth["labels"]["phase sep"]
    assert f"native label 'phase sep' ({count} records) is not mapped" in unmapped.output
    assert f"{count} problem(s): unmapped_label {count}" in unmapped.output
