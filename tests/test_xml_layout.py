"""The ``xml`` layout: imager exports read by configuration (records by element path,
fields by child-element and attribute paths), malformed files as one bad record naming
file and line, and an export drafted by ``marco sources add``, filled in and ingested
into tf.Examples."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from components.catalogue import Catalogue, CatalogueError, load_catalogue, parse_source
from components.readers import BadRecord, Record, read_source
from components.tools.drafting import inspect_institution
from components.tools.validation import validate_data
from pipeline.cli import main
from tests.ingestion_fixtures import drop_pixels

LOCAL_BEAM_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")

CODE = "RIGX"
# The lab's scores and what its scoring guide says they mean.
SCORES = {"Clear": "clear", "Crystals": "crystals", "Precipitate": "precipitate",
          "Phase Separation": "other"}
WELLS = [f"{row}{col}" for row in "ABCD" for col in (1, 2)]


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(drop_pixels(36, 48, seed)).save(path, "JPEG")


def _plate_xml(barcode: str, drops: list[tuple[str, str, str]], namespace: str = "") -> str:
    """One plate as a Rock Maker-style export: drops with their image and score."""
    xmlns = f' xmlns="{namespace}"' if namespace else ""
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             f'<Plate barcode="{barcode}"{xmlns}>',
             "  <Screen>JCSG+</Screen>"]
    for well, path, score in drops:
        lines += [f'  <Drop well="{well}" drop="1">',
                  f'    <Image path="{path}" imaged="2019-06-03T10:{len(lines):02d}:00"/>',
                  f"    <Score>{score}</Score>",
                  "  </Drop>"]
    lines.append("</Plate>")
    return "\n".join(lines) + "\n"


def _export(lab: Path, plates: int = 3) -> dict[str, tuple[str, str, str]]:
    """A lab folder: one XML file per plate under export/, images under images/.

    Returns:
        image path (relative to images/) -> (plate, well, score).
    """
    truth = {}
    labels = list(SCORES)
    for p in range(plates):
        barcode = f"RM{7100 + p}"
        drops = []
        for i, well in enumerate(WELLS):
            rel = f"{barcode}/{barcode}_{well}_d1.jpg"
            score = labels[(i + p) % len(labels)]
            _image(lab / "images" / rel, seed=p * 10 + i)
            drops.append((well, rel, score))
            truth[rel] = (barcode, well, score)
        (lab / "export").mkdir(parents=True, exist_ok=True)
        (lab / "export" / f"{barcode}.xml").write_text(
            _plate_xml(barcode, drops, "urn:example:rockmaker" if p == 1 else "")
        )
    return truth


def _source(tmp_path: Path, **layout) -> Catalogue:
    document = {
        "code": CODE, "name": "n", "imager": "Rock Imager", "setup": "Sitting drop",
        "layout": {"reader": "xml", "files": f"{CODE}/export/*.xml", "records": "Plate/Drop",
                   "image_root": f"{CODE}/images",
                   "fields": {"path": "Image/@path", "label": "Score", "plate": "../@barcode",
                              "well": "@well", "imaged_at": "Image/@imaged"},
                   **layout},
        "labels": [{"native": n, "class": c} for n, c in SCORES.items()],
    }
    return Catalogue((parse_source(tmp_path / f"{CODE}.yaml", document),))


# --------------------------------------------------------------------------- the reader


def test_xml_records_by_element_path_with_attributes_children_and_enclosing_elements(
    tmp_path: Path,
):
    data = tmp_path / "data"
    truth = _export(data / CODE)
    source = _source(tmp_path).get(CODE)
    records = [r for r in read_source(source, data)]
    assert all(isinstance(r, Record) for r in records), records
    assert len(records) == len(truth)
    for record in records:
        relative = Path(record.path).relative_to(data / CODE / "images").as_posix()
        plate, well, score = truth[relative]
        assert (record.plate, record.well, record.native_label) == (plate, well, score)
        assert record.imaged_at.startswith("2019-06-03T10:")
        assert record.image_id == f"{CODE}/{relative[:-4]}"
    # Each record's origin is its export file and the line its <Drop> opens on.
    first = next(r for r in records if r.well == "A2" and r.plate == "RM7100")
    text = (data / CODE / "export" / "RM7100.xml").read_text().splitlines()
    file, line = first.origin.rsplit(":", 1)
    assert file == str(data / CODE / "export" / "RM7100.xml")
    assert text[int(line) - 1].strip() == '<Drop well="A2" drop="1">'


def test_an_enclosing_elements_later_children_are_read_before_the_record(tmp_path: Path):
    """A field may name a child of an enclosing element written after the records."""
    lab = tmp_path / "data" / CODE
    _image(lab / "images" / "a.jpg", 1)
    _image(lab / "images" / "b.jpg", 2)
    (lab / "export").mkdir(parents=True)
    (lab / "export" / "all.xml").write_text(
        "<Export><Plates>\n"
        "<Plate><Drops>\n"
        '<Drop><File>a.jpg</File><Call>Clear</Call></Drop>\n'
        '<Drop><File>b.jpg</File><Call>Crystals</Call></Drop>\n'
        "</Drops><Barcode>LATE-1</Barcode></Plate>\n"
        "</Plates></Export>\n"
    )
    source = _source(tmp_path, records="Export/Plates/Plate/Drops/Drop", fields={
        "path": "File", "label": "Call", "plate": "../../Barcode"}).get(CODE)
    records = list(read_source(source, tmp_path / "data"))
    assert [(r.plate, r.native_label, r.origin[-2:]) for r in records] == [
        ("LATE-1", "Clear", ":3"), ("LATE-1", "Crystals", ":4")]


def test_malformed_xml_is_one_bad_record_naming_file_and_line(tmp_path: Path):
    """A broken plate file costs its rest, never the other files; counts add up."""
    data = tmp_path / "data"
    truth = _export(data / CODE)
    broken = data / CODE / "export" / "RM7101.xml"
    lines = broken.read_text().splitlines()
    bad_line = next(i for i, line in enumerate(lines) if "<Score>" in line) + 1 + 4 * 3
    assert "<Score>" in lines[bad_line - 1]
    lines[bad_line - 1] = lines[bad_line - 1].replace("</Score>", "</Scor e>")
    broken.write_text("\n".join(lines) + "\n")
    source = _source(tmp_path).get(CODE)

    items = list(read_source(source, data))
    bad = [i for i in items if isinstance(i, BadRecord)]
    good = [i for i in items if isinstance(i, Record)]
    assert len(bad) == 1
    assert bad[0].origin == f"{broken}:{bad_line}"
    assert bad[0].reason == "bad_record" and "malformed XML" in bad[0].detail
    assert f"line {bad_line}" in bad[0].detail
    # The three drops before the broken one are read; the other plates entirely.
    assert Counter(r.plate for r in good) == {"RM7100": 8, "RM7101": 3, "RM7102": 8}
    assert len(good) + len(bad) == len(truth) - 8 + 3 + 1

    # sources validate names the same file and line.
    report = validate_data(Catalogue((source,)), data, check_images=False)
    [problem] = report.problems
    assert (problem.kind, problem.origin) == ("bad_record", f"{broken}:{bad_line}")


def test_a_file_of_another_shape_is_named_not_silently_empty(tmp_path: Path):
    data = tmp_path / "data"
    _export(data / CODE, plates=1)
    (data / CODE / "export" / "settings.xml").write_text("<Settings><Lamp on='1'/></Settings>")
    items = list(read_source(_source(tmp_path).get(CODE), data))
    [bad] = [i for i in items if isinstance(i, BadRecord)]
    assert bad.reason == "bad_manifest" and bad.origin.endswith("settings.xml:1")
    assert "root element <Settings> is not <Plate>" in bad.detail


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"records": "Plate//Drop"}, "layout.records", "not a path of element names"),
        ({"records": None}, "layout.records", "is empty"),
        ({"fields": {"path": "Image/@path/x", "label": "Score"}}, "layout.fields.path",
         "not a path from the record element"),
        ({"fields": {"path": "Image/@path", "label": "../../Score"}}, "layout.fields.label",
         "climbs above the root element"),
    ],
)
def test_catalogue_refuses_malformed_xml_paths(tmp_path: Path, change, key, message):
    with pytest.raises(CatalogueError) as raised:
        _source(tmp_path, **change)
    assert f"{tmp_path / f'{CODE}.yaml'}: {key}: " in str(raised.value)
    assert message in str(raised.value)


# --------------------------------------------------------------------------- drafting


def test_sources_add_recognises_an_xml_export(tmp_path: Path):
    data = tmp_path / "data"
    _export(data / CODE)
    found = inspect_institution(data / CODE, code=CODE)
    assert found.reader == "xml"
    assert found.options == {
        "files": f"{CODE}/export/RM710*.xml", "records": "Plate/Drop",
        "image_root": f"{CODE}/images",
        "fields": {"path": "Image/@path", "label": "Score", "plate": "../@barcode",
                   "well": "@well", "imaged_at": "Image/@imaged"},
    }
    assert found.records == found.files_found == 24
    assert found.labels == Counter({"Clear": 6, "Crystals": 6, "Precipitate": 6,
                                    "Phase Separation": 6})
    assert found.skipped == {}


def _fill(text: str) -> str:
    """Fill in the draft as the engineer does: classes from the scoring guide, and the
    top-level blanks."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  - native: "):
            native = yaml.safe_load(line.split(": ", 1)[1])
            assert lines[i + 1].startswith("    class:")
            lines[i + 1] = f"    class: {SCORES[native]}"
    text = "\n".join(lines) + "\n"
    for key, value in (("imager", "Rock Imager 1000"), ("setup", "Sitting drop")):
        text, n = re.subn(rf"(?m)^{key}:[^\n]*$", f"{key}: {value}", text)
        assert n == 1
    return text


def _read_examples(split_dir: Path) -> list[dict[str, list]]:
    import tensorflow as tf

    examples = []
    for path in sorted(split_dir.glob("*.gz")):
        for raw in tf.data.TFRecordDataset(str(path), compression_type="GZIP"):
            features = tf.train.Example.FromString(raw.numpy()).features.feature
            examples.append({
                key: list(f.bytes_list.value) or list(f.int64_list.value)
                for key, f in features.items()
            })
    return examples


@pytest.mark.e2e
@pytest.mark.slow
def test_an_xml_export_drafted_filled_in_and_ingested_into_examples(tmp_path: Path):
    """From an imager's XML export to labelled examples, with no code: ``sources add``
    drafts the catalogue file, the engineer fills in the classes, the schema is
    updated, and the pipeline (tiny preset) ingests and labels every drop; a malformed
    plate file is quarantined, naming the file and line."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx

    from components.ingestion import report
    from components.names import (
        CLASS_NAMES,
        IMAGE_ID_KEY,
        IMAGED_AT_KEY,
        INSTITUTION_KEY,
        LABEL_KEY,
        NATIVE_LABEL_KEY,
        PLATE_KEY,
        SOURCE_PATH_KEY,
        WELL_KEY,
    )
    from pipeline.config import PRESETS, PipelineConfig
    from pipeline.pipeline import create_pipeline
    from schemas import SCHEMA_FILE

    data = tmp_path / "data"
    truth = _export(data / CODE)
    (data / CODE / "export" / "README.pdf").write_bytes(b"%PDF-1.4\n")
    catalogue_dir = tmp_path / "catalogue"
    catalogue_dir.mkdir()
    runner = CliRunner()

    # 1. Draft the catalogue file from the lab's files.
    added = runner.invoke(main, ["sources", "add", CODE, "--from", str(data / CODE),
                                 "--catalogue", str(catalogue_dir), "--name", "Rigaku lab"])
    assert added.exit_code == 0, added.output
    assert f"{CODE}: xml from {CODE}/export/RM710*.xml, records Plate/Drop" in added.output
    assert re.search(r"plate\s+<- path '\.\./@barcode'", added.output)
    assert "24 records, 24 image files found" in added.output
    assert "skipped .pdf: 1 file, not images or label records" in added.output
    draft = (catalogue_dir / f"{CODE}.yaml").read_text()
    with pytest.raises(CatalogueError, match="is empty; fill it in"):
        load_catalogue(catalogue_dir)

    # 2. Fill it in; the catalogue loads it; the schema (a copy) learns the new words.
    (catalogue_dir / f"{CODE}.yaml").write_text(_fill(draft))
    assert load_catalogue(catalogue_dir).get(CODE).layout.reader == "xml"
    schema = tmp_path / "schema.pbtxt"
    schema.write_bytes(SCHEMA_FILE.read_bytes())
    updated = runner.invoke(main, ["schema", "update", "--catalogue", str(catalogue_dir),
                                   "--schema-file", str(schema)])
    assert updated.exit_code == 0, updated.output

    # 3. One plate file breaks after its first two drops.
    broken = data / CODE / "export" / "RM7102.xml"
    lines = broken.read_text().splitlines()
    bad_line = [i for i, line in enumerate(lines, 1) if "<Score>" in line][2]
    lines[bad_line - 1] = lines[bad_line - 1].replace("<Score>", "<Score>&")
    broken.write_text("\n".join(lines) + "\n")

    # 4. The pipeline ingests, validates and labels it.
    root = tmp_path / "run"
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        str(root / "metadata.db")
    )
    config = PipelineConfig(
        pipeline_root=str(root / "pipeline"), preset=PRESETS["tiny"], data_dir=str(data),
        catalogue_dir=str(catalogue_dir), schema_file=str(schema), eval_percent=25,
        quarantine_budget=0.1, beam_pipeline_args=LOCAL_BEAM_ARGS,
    )
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config, metadata, through="transform"))
    store = metadata_store.MetadataStore(metadata)
    for context in store.get_contexts_by_type("node"):
        states = [e.last_known_state for e in store.get_executions_by_context(context.id)]
        assert states == [metadata_store_pb2.Execution.COMPLETE], context.name
    [examples] = [a for a in store.get_artifacts_by_type("Examples")
                  if "ImageExampleGen" in a.uri]
    [transformed] = [a for a in store.get_artifacts_by_type("Examples") if "Transform" in a.uri]

    expected = {rel: facts for rel, facts in truth.items()
                if not rel.startswith("RM7102/") or rel.split("_")[1] in WELLS[:2]}
    raw = {}
    for split in ("train", "eval"):
        for example in _read_examples(Path(examples.uri, f"Split-{split}")):
            raw[example[IMAGE_ID_KEY][0]] = example
    assert len(raw) == len(expected) == 18
    for example in raw.values():
        relative = Path(example[SOURCE_PATH_KEY][0].decode()).relative_to(
            data / CODE / "images")
        plate, well, score = expected[relative.as_posix()]
        assert example[INSTITUTION_KEY] == [CODE.encode()]
        assert example[NATIVE_LABEL_KEY] == [score.encode()]
        assert (example[PLATE_KEY], example[WELL_KEY]) == ([plate.encode()], [well.encode()])
        assert example[IMAGED_AT_KEY][0].startswith(b"2019-06-03T10:")
        assert example[IMAGE_ID_KEY] == [f"{CODE}/{relative.with_suffix('').as_posix()}".encode()]
    rows = report.read_quarantine(examples.uri)
    assert [(r["reason"], r["origin"]) for r in rows] == [("bad_record", f"{broken}:{bad_line}")]
    assert examples.custom_properties["num_quarantined"].int_value == 1

    # Transform gives every drop the class its score was mapped to.
    labelled = Counter()
    for split in ("train", "eval"):
        for example in _read_examples(Path(transformed.uri, f"Split-{split}")):
            native = raw[example[IMAGE_ID_KEY][0]][NATIVE_LABEL_KEY][0].decode()
            assert example[LABEL_KEY] == [CLASS_NAMES.index(SCORES[native])], native
            labelled[native] += 1
    assert labelled == Counter(score for _, _, score in expected.values())
