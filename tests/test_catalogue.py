"""The source catalogue: the shipped files, and a clear error for every malformed one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components.catalogue import CatalogueError, load_catalogue
from components.names import CLASS_NAMES


def test_shipped_catalogue_has_the_papers_five_institutions_and_38_labels():
    catalogue = load_catalogue()
    assert set(catalogue.codes) == {"BMS", "CSIRO", "GSK", "HWMRI", "MERCK"}
    assert len(catalogue.native_labels()) == 38
    # Published MARCO ids: sources 0-4, raw labels 0-37, each used once.
    assert sorted(catalogue.by_marco_source_id()) == [0, 1, 2, 3, 4]
    assert sorted(catalogue.by_marco_raw_id()) == list(range(38))
    # Paper Table 1 image counts add up to the 493,214 images of the data set.
    assert sum(s.paper_images for s in catalogue) == 493_214
    for source in catalogue:
        assert {label.class_name for label in source.labels} == set(CLASS_NAMES), source.code


def test_vocabularies_differ_in_kind_and_layouts_cover_all_three_readers():
    catalogue = load_catalogue()
    assert {s.layout.reader for s in catalogue} == {"csv_manifest", "folder_per_label", "jsonl"}
    natives = [native for _, native in catalogue.native_labels()]
    assert any(n.isdigit() for n in natives), "a numeric score vocabulary"
    assert any("+" in n for n in natives), "a combined label"
    assert catalogue.class_of("CSIRO", "phase separation + precipitate") == 3
    assert catalogue.class_of("MERCK", "100") == CLASS_NAMES.index("crystals")
    assert catalogue.class_of("MERCK", "nope") is None
    assert catalogue.class_of("NOPE", "0") is None


def _rewrite(folder: Path, code: str, edit) -> Path:
    path = folder / f"{code}.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (lambda d: d.pop("imager"), "imager", "missing required key"),
        (lambda d: d.pop("labels"), "labels", "missing required key"),
        (lambda d: d["labels"][0].pop("class"), "labels[0].class", "missing required key"),
        (lambda d: d["labels"][1].update({"class": "dust"}), "labels[1].class",
         "not one of the 4 classes"),
        (lambda d: d["labels"].append(dict(d["labels"][0], marco_raw_id=99)),
         "labels[6].native", "mapped twice"),
        (lambda d: d["layout"].update({"reader": "parquet"}), "layout.reader", "unknown reader"),
        (lambda d: d["layout"]["columns"].pop("label"), "layout.columns.label",
         "missing required key"),
        (lambda d: d.update({"colour_space": "rgb"}), "colour_space", "unknown key"),
        (lambda d: d.update({"code": "bms"}), "code", "upper-case"),
        (lambda d: d["layout"].update({"path_pattern": "(?P<row>x)"}), "layout.path_pattern",
         "unknown group"),
    ],
)
def test_malformed_file_names_the_file_and_key(catalogue_copy, edit, key, words):
    path = _rewrite(catalogue_copy, "BMS", edit)
    with pytest.raises(CatalogueError) as info:
        load_catalogue(catalogue_copy)
    message = str(info.value)
    assert str(path) in message
    assert f": {key}:" in message
    assert words in message


def test_duplicate_institution_code_across_files(catalogue_copy):
    (catalogue_copy / "BMS2.yaml").write_text((catalogue_copy / "BMS.yaml").read_text())
    _rewrite(catalogue_copy, "BMS2", lambda d: [lab.pop("marco_raw_id") for lab in d["labels"]]
             and d.pop("marco_source_id"))
    with pytest.raises(CatalogueError, match=r"BMS2\.yaml: code: duplicate institution code"):
        load_catalogue(catalogue_copy)


def test_published_raw_id_used_twice(catalogue_copy):
    _rewrite(catalogue_copy, "GSK", lambda d: d["labels"][0].update({"marco_raw_id": 0}))
    with pytest.raises(CatalogueError, match=r"GSK\.yaml: labels\[0\]\.marco_raw_id: 0 also used"):
        load_catalogue(catalogue_copy)


def test_not_yaml_and_empty_folder(tmp_path, catalogue_copy):
    (catalogue_copy / "BAD.yaml").write_text("code: [unclosed\n")
    with pytest.raises(CatalogueError, match=r"BAD\.yaml: not valid YAML"):
        load_catalogue(catalogue_copy)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogueError, match="no institution files"):
        load_catalogue(empty)


def test_numeric_native_labels_are_read_as_text(catalogue_copy):
    _rewrite(catalogue_copy, "MERCK", lambda d: d["labels"][0].update({"native": 0}))
    catalogue = load_catalogue(catalogue_copy)
    assert catalogue.class_of("MERCK", "0") == 0


def test_source_document_reads_back_as_the_same_source():
    """The catalogue writes its entries (``marco sources add``) as its loader reads them."""
    from components.catalogue import parse_source, source_document

    for source in load_catalogue():
        document = source_document(source)
        assert parse_source(source.file, yaml.safe_load(yaml.safe_dump(document))) == source
        assert list(document)[:4] == ["code", "name", "imager", "setup"]
        assert list(document)[-2:] == ["layout", "labels"]
    merck = load_catalogue().get("MERCK")
    assert all(isinstance(e["native"], str) for e in source_document(merck)["labels"])
