"""Batch scoring: inputs, the RunInference handler, the Beam pipeline, the CSV file and hits."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from components.names import CLASS_NAMES, PROBABILITIES_SIGNATURE
from components.tools.scoring import inputs, results
from components.tools.scoring.inputs import DEFAULT_PLATE_WELL_PATTERN, InputError, PlateWellParser
from components.tools.scoring.model import ModelNotFound, resolve_model
from components.tools.scoring.results import ResultRow
from pipeline.cli import main
from tests.scoring_fixtures import (
    BAD_IMAGES,
    GOOD_IMAGES,
    VERSION,
    direct_probabilities,
    serving_dir,  # noqa: F401  (fixture)
    write_drop_folder,
)
from tests.trainer_fixtures import drop_image

CRYSTALS = CLASS_NAMES.index("crystals")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def probabilities_of(row: dict[str, str]) -> list[float]:
    return [float(row[name]) for name in CLASS_NAMES]


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drops")
    write_drop_folder(root)
    return root


@pytest.fixture(scope="module")
def folder_run(drops, serving_dir, tmp_path_factory):  # noqa: F811
    """The drop folder scored once, with hits; the small chunk size forces a merge sort."""
    from components.tools.scoring.beam import ScoreOptions, score_images

    out_dir = tmp_path_factory.mktemp("folder-run")
    model_dir = serving_dir / str(VERSION)
    good = sorted(GOOD_IMAGES)
    crystals = direct_probabilities(model_dir, [(drops / n).read_bytes() for n in good])[
        :, CRYSTALS
    ]
    # Half the images above the threshold, none within float noise of it.
    ordered = np.sort(crystals)
    middle = len(ordered) // 2
    threshold = float((ordered[middle - 1] + ordered[middle]) / 2)
    options = ScoreOptions(hits_dir=str(out_dir / "hits"), hits_threshold=threshold,
                           batch_size=4, workers=2, chunk_rows=5, progress=False)
    summary = score_images([str(drops)], str(serving_dir), str(out_dir / "results.csv"),
                           options)
    return summary, read_csv(out_dir / "results.csv"), out_dir, threshold


# ----------------------------------------------------------------------------- the model


@pytest.mark.slow
def test_resolve_model_takes_the_highest_complete_version(serving_dir):  # noqa: F811
    # Version 17 has no saved_model.pb yet (still being pushed) and 1 is older.
    version = resolve_model(str(serving_dir))
    assert version.version == VERSION
    assert version.path == str(serving_dir / str(VERSION))
    direct = resolve_model(str(serving_dir / str(VERSION)))
    assert direct.path == version.path and direct.version == VERSION


def test_resolve_model_names_what_is_missing(tmp_path):
    with pytest.raises(ModelNotFound, match="no such folder"):
        resolve_model(str(tmp_path / "absent"))
    with pytest.raises(ModelNotFound, match="not a SavedModel"):
        resolve_model(str(tmp_path))
    (tmp_path / "5").mkdir()
    with pytest.raises(ModelNotFound, match=r"version folders \[5\]"):
        resolve_model(str(tmp_path))


@pytest.mark.slow
def test_check_signature_refuses_a_model_without_probabilities(tmp_path, serving_dir):  # noqa: F811
    from tensorflow.core.protobuf import saved_model_pb2

    from components.tools.scoring.model import check_signature

    check_signature(str(serving_dir / str(VERSION)))
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((serving_dir / str(VERSION) / "saved_model.pb").read_bytes())
    for graph in saved.meta_graphs:
        del graph.signature_def[PROBABILITIES_SIGNATURE]
    (tmp_path / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(ModelNotFound, match="no 'probabilities' signature.*serving_default"):
        check_signature(str(tmp_path))


@pytest.mark.slow
def test_scorer_isolates_bad_images_in_a_batch(serving_dir, drops):  # noqa: F811
    from components.tools.scoring.model import ImageError, ProbabilitiesScorer

    model_dir = serving_dir / str(VERSION)
    good = [(drops / n).read_bytes() for n in sorted(GOOD_IMAGES)[:3]]
    truncated = (drops / "PLATE05/PLATE05_A02_truncated.jpg").read_bytes()
    batch = [good[0], b"not an image", good[1], truncated, good[2]]
    outcomes = ProbabilitiesScorer(str(model_dir)).score(batch)
    assert [isinstance(o, ImageError) for o in outcomes] == [False, True, False, True, False]
    assert "image file format" in outcomes[1].message
    assert "JPEG" in outcomes[3].message
    expected = direct_probabilities(model_dir, good)
    np.testing.assert_allclose(np.stack([outcomes[0], outcomes[2], outcomes[4]]), expected,
                               atol=1e-6)


# ----------------------------------------------------------------------------- inputs


def test_default_pattern_reads_plate_and_well():
    parser = PlateWellParser()
    for name, expected in GOOD_IMAGES.items():
        assert parser.parse(f"/data/scans/{name}") == expected, name
    assert parser.parse("/imager/002s_C6_ImagerDefaults_9.jpg") == ("002s", "C6")
    assert parser.parse("/data/run_Q01/photo.jpg") == ("", "")  # no row Q on a plate
    assert parser.parse("/data/PLATE9_A13x.jpg") == ("", "")
    # A plate folder named like a well (P1, A1) does not hide the well in the file name.
    assert parser.parse("/plates/P1/P1_A01.jpg") == ("P1", "A01")
    assert parser.parse("A1/A1_B02_2.jpg") == ("A1", "B02")
    assert parser.parse("/x/D3/D3_H12-20140101.png") == ("D3", "H12")


def test_custom_pattern_and_bad_patterns():
    parser = PlateWellParser(r"/(?P<plate>\d+)/(?P<well>\d{4})_")
    assert parser.parse("/hwmri/10523/0042_20140101.jpg") == ("10523", "0042")
    assert PlateWellParser(r"(?P<well>[A-H]\d\d)").parse("/x/foo_B03.jpg") == ("", "B03")
    with pytest.raises(ValueError, match="no .*plate.* group"):
        PlateWellParser(r"(\w+)_(\w+)")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        PlateWellParser(r"(?P<plate>")
    assert PlateWellParser(DEFAULT_PLATE_WELL_PATTERN).pattern == DEFAULT_PLATE_WELL_PATTERN


def test_check_inputs_classifies_and_names_problems(drops, tmp_path):
    manifest = tmp_path / "list.txt"
    manifest.write_text("a.jpg\n")
    sources = inputs.check_inputs([str(drops), str(drops / "PLATE01" / "*.jpg"), str(manifest),
                                   str(drops / "PLATE02" / "B07_1.jpeg")])
    assert [s.kind for s in sources] == [inputs.FOLDER, inputs.GLOB, inputs.MANIFEST,
                                         inputs.IMAGE]
    with pytest.raises(InputError, match="nowhere: no such file or folder"):
        inputs.check_inputs([str(drops), str(tmp_path / "nowhere")])
    with pytest.raises(InputError, match="matches no file"):
        inputs.check_inputs([str(tmp_path / "*.png")])
    table = tmp_path / "list.csv"
    table.write_text("image_id,label\n7,clear\n")
    with pytest.raises(InputError, match="no column 'where'"):
        inputs.check_inputs([str(table)], path_column="where")


def test_manifests_and_globs_list_their_images(drops, tmp_path):
    text = tmp_path / "lists" / "today.lst"
    text.parent.mkdir()
    text.write_text(f"# plate 1\n{drops}/PLATE01/PLATE01_A01_20240101-0800.jpg\n\n"
                    f"../{drops.name}/PLATE02/B07_1.jpeg\n")
    table = tmp_path / "scores.csv"
    table.write_text("Label,Filename\ncrystals,"
                     f"{drops / 'PLATE02' / 'C11_2.png'}\nclear,missing.jpg\n")
    csv_source = inputs.check_inputs([str(table)])[0]
    assert list(inputs.list_images(csv_source)) == [str(drops / "PLATE02" / "C11_2.png"),
                                                    str(tmp_path / "missing.jpg")]
    text_source = inputs.check_inputs([str(text)])[0]
    assert list(inputs.list_images(text_source)) == [
        str(drops / "PLATE01/PLATE01_A01_20240101-0800.jpg"),
        str(tmp_path / drops.name / "PLATE02/B07_1.jpeg"),  # relative to the manifest
    ]
    glob_source = inputs.check_inputs([str(drops / "PLATE04" / "**" / "*.jpg")])[0]
    assert sorted(inputs.list_images(glob_source)) == sorted(
        str(drops / n) for n in GOOD_IMAGES if n.startswith("PLATE04/"))


def test_folders_skip_non_images_and_the_hits_folder(drops):
    source = inputs.check_inputs([str(drops)])[0]
    listed = set(inputs.list_images(source))
    assert listed == {str(drops / n) for n in [*GOOD_IMAGES, *BAD_IMAGES]}
    without = set(inputs.list_images(source, exclude=[str(drops / "PLATE04")]))
    assert without == {p for p in listed if "/PLATE04/" not in p}


# ----------------------------------------------------------------------------- sorting


def _random_rows(count: int, seed: int) -> list[ResultRow]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        if rng.random() < 0.1:
            rows.append(ResultRow(f"/img/{index:04d}.jpg", None, error="empty file"))
        else:
            crystals = rng.choice([0.5, rng.random()])  # some ties, broken by path
            rest = (1 - crystals) / 3
            rows.append(ResultRow(f"/img/{index:04d}.jpg", (rest, crystals, rest, rest)))
    return rows


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_external_sort_orders_like_an_in_memory_sort(tmp_path, chunk_rows):
    rows = _random_rows(200, seed=chunk_rows)
    expected = sorted(rows, key=ResultRow.sort_key)
    with results.sorted_rows(iter(rows), str(tmp_path), chunk_rows) as (count, ordered):
        got = list(ordered)
    assert count == 200
    assert got == expected
    crystals = [r.crystals for r in got if r.error == ""]
    assert crystals == sorted(crystals, reverse=True)
    assert all(r.error for r in got[len(crystals):])
    assert len(list(tmp_path.iterdir())) == (0 if chunk_rows >= 200 else -(-200 // chunk_rows))


def test_rows_round_trip_and_format_exactly():
    row = ResultRow("/d/ü,1.jpg", (0.1, 0.2, 0.3, 0.4), "P1", "A01")
    assert ResultRow.from_json(row.to_json()) == row
    cells = row.csv_cells()
    assert cells[1] == "precipitate"
    value = np.float32(0.123456789)
    assert np.float32(results.format_probability(float(value))) == value
    with pytest.raises(ValueError, match="either probabilities or an error"):
        ResultRow("/d/x.jpg", None)


# ----------------------------------------------------------------------------- pipeline


@pytest.mark.slow
def test_folder_run_has_one_row_per_image_and_counts_bad_files(folder_run):
    summary, rows, _, _ = folder_run
    assert len(rows) == len(GOOD_IMAGES) + len(BAD_IMAGES)
    assert summary.results.images == len(rows)
    assert summary.results.errors == len(BAD_IMAGES)
    assert summary.results.scored == len(GOOD_IMAGES)
    assert sum(summary.results.by_class.values()) == len(GOOD_IMAGES)
    assert summary.model_version == VERSION
    by_name = {Path(r["path"]).name: r for r in rows}
    for name, reason in BAD_IMAGES.items():
        row = by_name[Path(name).name]
        assert reason in row["error"], (name, row["error"])
        assert row["predicted_class"] == "" and all(row[c] == "" for c in CLASS_NAMES)
    assert all(by_name[Path(n).name]["error"] == "" for n in GOOD_IMAGES)


@pytest.mark.slow
def test_csv_probabilities_equal_the_models(folder_run, drops, serving_dir):  # noqa: F811
    _, rows, _, _ = folder_run
    scored = [r for r in rows if not r["error"]]
    direct = direct_probabilities(serving_dir / str(VERSION),
                                  [Path(r["path"]).read_bytes() for r in scored])
    got = np.array([probabilities_of(r) for r in scored])
    np.testing.assert_allclose(got, direct, atol=1e-6)
    assert [r["predicted_class"] for r in scored] == [CLASS_NAMES[i]
                                                      for i in direct.argmax(axis=1)]
    assert list(rows[0]) == ["path", "predicted_class", *CLASS_NAMES, "plate", "well", "imaged_at",
                            "error"]


@pytest.mark.slow
def test_rows_are_sorted_by_crystal_probability_errors_last(folder_run):
    _, rows, _, _ = folder_run
    crystals = [float(r["crystals"]) for r in rows if not r["error"]]
    assert len(set(crystals)) > len(crystals) // 2  # the order below means something
    assert crystals == sorted(crystals, reverse=True)
    first_error = next(i for i, r in enumerate(rows) if r["error"])
    assert all(r["error"] for r in rows[first_error:])


@pytest.mark.slow
def test_plate_and_well_columns(folder_run, drops):
    _, rows, _, _ = folder_run
    by_path = {r["path"]: (r["plate"], r["well"]) for r in rows}
    for name, expected in GOOD_IMAGES.items():
        assert by_path[str(drops / name)] == expected, name
    assert by_path[str(drops / "PLATE05/PLATE05_A02_truncated.jpg")] == ("PLATE05", "A02")


@pytest.mark.slow
def test_hits_folder_holds_exactly_the_hits_in_rank_order(folder_run):
    summary, rows, out_dir, threshold = folder_run
    hits = [r for r in rows if r["crystals"] and float(r["crystals"]) > threshold]
    assert 0 < len(hits) < len(GOOD_IMAGES)
    assert summary.results.hits == summary.results.hits_copied == len(hits)
    copied = sorted((out_dir / "hits").iterdir())
    assert len(copied) == len(hits)
    for rank, (row, path) in enumerate(zip(hits, copied, strict=True), start=1):
        assert path.name.startswith(f"{rank:04d}_")
        assert path.name.endswith(Path(row["path"]).name)
        assert path.read_bytes() == Path(row["path"]).read_bytes()


@pytest.mark.slow
def test_hits_folder_must_be_new_or_empty(drops, serving_dir, tmp_path):  # noqa: F811
    from components.tools.scoring.beam import ScoreOptions, score_images

    (tmp_path / "hits").mkdir()
    (tmp_path / "hits" / "old.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="not empty"):
        score_images([str(drops)], str(serving_dir), str(tmp_path / "r.csv"),
                     ScoreOptions(hits_dir=str(tmp_path / "hits"), progress=False))


@pytest.mark.slow
def test_manifest_glob_and_duplicates_via_the_command_line(drops, serving_dir, tmp_path):  # noqa: F811
    manifest = tmp_path / "today.txt"
    manifest.write_text(f"{drops}/PLATE01/PLATE01_A01_20240101-0800.jpg\n"
                        f"{drops}/PLATE05/PLATE05_A03_notes.png\n")
    out = tmp_path / "results.csv"
    result = CliRunner().invoke(main, [
        "score", str(manifest), str(drops / "PLATE01" / "*.jpg"), str(drops / "PLATE02"),
        "--model", str(serving_dir), "--out", str(out), "--quiet", "--batch-size", "2",
        "--direct_num_workers=1",
    ])
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    # The glob is case-sensitive: it takes A01's .jpg, not A02's .png nor H12's .JPG;
    # A01 is in the manifest too.
    expected = {str(drops / n) for n in GOOD_IMAGES if n.startswith("PLATE02/")}
    expected |= {str(drops / "PLATE01/PLATE01_A01_20240101-0800.jpg"),
                 str(drops / "PLATE05/PLATE05_A03_notes.png")}
    assert sorted(r["path"] for r in rows) == sorted(expected)  # each image once
    assert f"scored {len(expected) - 1} of {len(expected)} images" in result.output
    assert "not scored" in result.output and f"version {VERSION}" in result.output


@pytest.mark.slow
def test_command_line_errors_name_the_problem(drops, serving_dir, tmp_path):  # noqa: F811
    runner = CliRunner()
    missing = runner.invoke(main, ["score", str(tmp_path / "nope"), "--model", str(serving_dir),
                                   "--out", str(tmp_path / "r.csv")])
    assert missing.exit_code == 1 and "nope: no such file or folder" in missing.output
    typo = runner.invoke(main, ["score", str(drops), "--model", str(serving_dir),
                                "--hit=hits"])
    assert typo.exit_code == 2 and "--hit" in typo.output
    no_model = runner.invoke(main, ["score", str(drops), "--model", str(tmp_path)])
    assert no_model.exit_code == 1 and "not a SavedModel" in no_model.output


# ----------------------------------------------------------------------------- TIFF


def _tiff16(pixels: np.ndarray) -> bytes:
    """A 16-bit greyscale TIFF, as imagers write them."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint16)).save(buffer, format="TIFF")
    return buffer.getvalue()


def _read_image(path: Path) -> tuple[str, bytes]:
    from components.tools.scoring.beam import ReadImage

    reader = ReadImage(DEFAULT_PLATE_WELL_PATTERN)
    reader.setup()
    [element] = reader.process(str(path))
    return element


def test_a_16_bit_tiff_reaches_the_model_scaled_over_the_full_range(tmp_path):
    import tensorflow as tf

    # Every 16-bit value once, and the corners of each rounding step.
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = tmp_path / "PLATE9_B03.tif"
    path.write_bytes(_tiff16(values))
    assert path.read_bytes()[:4] == b"II*\x00"
    got_path, data = _read_image(path)
    assert got_path == str(path)
    decoded = tf.io.decode_image(data, expand_animations=False).numpy()[..., 0]
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(decoded, expected)
    assert decoded[0, 0] == 0 and decoded[-1, -1] == 255 and decoded.flat[128 * 257] == 128
    assert decoded.flat[257 * 100 + 128] == 100 and decoded.flat[257 * 100 + 129] == 101


@pytest.mark.slow
def test_tiffs_are_scored_like_the_same_pixels_as_png(serving_dir, tmp_path):  # noqa: F811
    from components.tools.scoring.beam import ScoreOptions, score_images

    rng = np.random.default_rng(5)
    drops = tmp_path / "tiffs"
    drops.mkdir()
    expected = {}
    for label in range(4):
        grey = np.asarray(Image.open(io.BytesIO(drop_image(label, rng))).convert("L"))
        # 16-bit values that round back to the 8-bit ones: 257 * v, give or take 128.
        sixteen = grey.astype(np.int64) * 257 + rng.integers(-128, 129, grey.shape)
        sixteen = np.clip(sixteen, 0, 65535)
        name = f"PLATE9_A0{label + 1}.TIFF" if label == 3 else f"PLATE9_A0{label + 1}.tif"
        (drops / name).write_bytes(_tiff16(sixteen))
        png = io.BytesIO()
        Image.fromarray(grey).save(png, format="PNG")
        expected[str(drops / name)] = direct_probabilities(serving_dir / str(VERSION),
                                                           [png.getvalue()])[0]
    (drops / "PLATE9_B01.tif").write_bytes(_tiff16(np.zeros((8, 8)))[:60])  # cut short
    summary = score_images([str(drops)], str(serving_dir), str(tmp_path / "t.csv"),
                           ScoreOptions(progress=False, workers=1))
    rows = {r["path"]: r for r in read_csv(tmp_path / "t.csv")}
    assert summary.results.scored == 4 and summary.results.errors == 1
    for path, probabilities in expected.items():
        assert rows[path]["error"] == ""
        np.testing.assert_allclose(probabilities_of(rows[path]), probabilities, atol=1e-6)
    assert rows[path]["plate"] == "PLATE9"
    assert "cannot decode the TIFF image" in rows[str(drops / "PLATE9_B01.tif")]["error"]


@pytest.mark.slow
def test_real_photographs_score_without_error(real_drops, serving_dir, tmp_path):  # noqa: F811
    from components.tools.scoring.beam import ScoreOptions, score_images

    # labels.csv names each photograph in its 'filename' column.
    summary = score_images([str(real_drops / "labels.csv")], str(serving_dir),
                           str(tmp_path / "real.csv"), ScoreOptions(progress=False))
    rows = read_csv(tmp_path / "real.csv")
    photos = sorted(p.name for p in real_drops.glob("*.jpeg"))
    assert sorted(Path(r["path"]).name for r in rows) == photos
    assert summary.results.errors == 0 and all(r["error"] == "" for r in rows)
    for row in rows:
        assert sum(probabilities_of(row)) == pytest.approx(1.0, abs=1e-5)
