"""Tests of the synthetic data set generator: allocation, layouts, looks, shards, preview."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.catalogue import load_catalogue
from components.names import CLASS_IDS, CLASS_NAMES
from components.tools.synth import render as render_mod
from components.tools.synth.writer import (
    SUMMARY_FILE,
    SynthError,
    apportion,
    generate,
    largest_remainder,
    make_plan,
)

SCALE = 0.1
N = 120


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, catalogue) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "data"
    doc = generate(out, N, seed=5, catalogue=catalogue, scale=SCALE, workers=2)
    return out, doc


# --------------------------------------------------------------------------- allocation


def test_largest_remainder_is_exact_and_deterministic():
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]
    assert largest_remainder(7, [0.5, 0.25, 0.25]) == [3, 2, 2]  # 3.5, 1.75, 1.75
    assert largest_remainder(0, [3, 4]) == [0, 0]
    assert sum(largest_remainder(12345, [8719, 15933, 79632, 83126, 305804])) == 12345
    with pytest.raises(SynthError):
        largest_remainder(-1, [1])


def test_apportion_gives_small_entries_their_minimum():
    assert apportion(100, [1, 99], [5, 5]) == [5, 95]
    assert apportion(1000, [1, 99], [5, 5]) == [10, 990]
    assert apportion(3, [1, 99], [5, 5]) == [0, 3]  # minimums impossible: plain split


def test_institution_and_class_counts_follow_the_paper_tables(catalogue):
    plan = make_plan(catalogue, 1000, seed=0, scale=SCALE)
    per_source = {sp.source.code: len(sp.items) for sp in plan.sources}
    # Table 1 quotas: 17.68, 32.30, 161.46, 168.54, 620.03 -> largest remainder.
    assert per_source == {"BMS": 18, "CSIRO": 32, "GSK": 169, "HWMRI": 161, "MERCK": 620}
    classes = Counter(it.class_name for it in plan.items())
    # Table 2 quotas: clear 335.80, crystals 128.35, other 56.48, precipitate 479.37.
    assert classes == {"clear": 336, "crystals": 128, "other": 57, "precipitate": 479}
    assert per_source == {
        code: expected
        for code, expected in zip(
            [s.code for s in catalogue],
            largest_remainder(1000, [s.paper_images for s in catalogue]),
            strict=True,
        )
    }


@pytest.mark.parametrize("images", [60, 100, 1000])
def test_every_institution_has_every_class(catalogue, images):
    plan = make_plan(catalogue, images, seed=1, scale=SCALE)
    assert sum(1 for _ in plan.items()) == images
    for sp in plan.sources:
        counts = Counter(it.class_name for it in sp.items)
        assert all(counts[c] >= 3 for c in CLASS_NAMES), (sp.source.code, counts)
        # Native labels of a class share its images evenly.
        for c in CLASS_NAMES:
            natives = Counter(it.native for it in sp.items if it.class_name == c)
            if natives:
                assert max(natives.values()) - min(natives.values()) <= 1


def test_bad_requests_are_refused(catalogue, tmp_path):
    with pytest.raises(SynthError, match="--images"):
        make_plan(catalogue, 0, seed=0)
    with pytest.raises(SynthError, match="--seed"):
        make_plan(catalogue, 10, seed=-1)
    with pytest.raises(SynthError, match="--scale"):
        make_plan(catalogue, 10, seed=0, scale=0)
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(SynthError, match="not empty"):
        generate(tmp_path, 10, catalogue=catalogue, scale=SCALE, workers=1)
    with pytest.raises(SynthError, match="refusing"):
        generate(tmp_path, 10, catalogue=catalogue, scale=SCALE, workers=1, overwrite=True)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_whatever_the_workers(tmp_path, catalogue):
    a = generate(tmp_path / "a", 30, seed=11, catalogue=catalogue, scale=SCALE, workers=1)
    generate(tmp_path / "b", 30, seed=11, catalogue=catalogue, scale=SCALE, workers=2)
    generate(tmp_path / "c", 30, seed=12, catalogue=catalogue, scale=SCALE, workers=1)
    da, db, dc = (_digests(tmp_path / k) for k in "abc")
    assert da == db
    assert len(da) > 30
    images = [k for k in da if k.endswith((".jpg", ".png"))]
    assert len(images) == 30
    changed = [k for k in images if k in dc and dc[k] != da[k]]
    assert set(dc) != set(da) or changed
    assert json.loads((tmp_path / "a" / SUMMARY_FILE).read_text()) == a


# --------------------------------------------------------------------------- layouts


def test_summary_matches_the_plan(dataset, catalogue):
    _, doc = dataset
    assert doc["images"] == N and doc["seed"] == 5 and doc["scale"] == SCALE
    assert sum(doc["classes"].values()) == N
    for source in catalogue:
        info = doc["institutions"][source.code]
        assert sum(info["labels"].values()) == info["images"]
        assert sum(info["classes"].values()) == info["images"]
        assert set(info["labels"]) == {lab.native for lab in source.labels}


def test_each_institution_is_written_in_its_layout(dataset, catalogue):
    out, doc = dataset
    assert (out / "BMS" / "scores.csv").read_text().splitlines()[0] == (
        "ImageFile;Score;Barcode;Well;Imaged"
    )
    assert (out / "GSK" / "labels.csv").read_text().startswith("filename,label\n")
    assert list((out / "CSIRO").glob("export-*.jsonl"))
    merck = [json.loads(line) for f in (out / "MERCK").glob("*.jsonl")
             for line in f.read_text().splitlines()]
    assert {"file", "score", "id", "plate", "well"} <= set(merck[0])
    assert len({m["id"] for m in merck}) == len(merck) == doc["institutions"]["MERCK"]["images"]
    hwmri = doc["institutions"]["HWMRI"]["labels"]
    for native, n in hwmri.items():
        files = [p for p in (out / "HWMRI" / native).rglob("*") if p.is_file()] if n else []
        assert len(files) == n


def test_records_read_back_through_the_readers(dataset, catalogue):
    readers = pytest.importorskip("components.readers")
    out, doc = dataset
    for source in catalogue:
        records = list(readers.read_source(source, out))
        bad = [r for r in records if not isinstance(r, readers.Record)]
        assert not bad, bad[:3]
        labels = Counter(r.native_label for r in records)
        expected = {k: v for k, v in doc["institutions"][source.code]["labels"].items() if v}
        assert labels == expected, source.code
        assert all(Path(r.path).is_file() for r in records)
        assert len({r.image_id for r in records}) == len(records)
        assert all(r.plate and r.well for r in records), source.code
        assert all(source.class_of(r.native_label) is not None for r in records)


def test_a_new_institution_gets_data_from_its_yaml_alone(tmp_path, catalogue_copy):
    readers = pytest.importorskip("components.readers")
    (catalogue_copy / "NEWLAB.yaml").write_text(
        "code: NEWLAB\nname: New Lab\nimager: Rigaku Minstrel\nsetup: Sitting drop\n"
        "paper_images: 20000\n"
        "imaging: {colour: grey, width: 640, height: 480, formats: [png]}\n"
        "layout:\n  reader: csv_manifest\n  manifest: new/batch-*.tsv\n  delimiter: \"\\t\"\n"
        "  columns: {path: img, label: score, image_id: ref}\n"
        "  path_pattern: '(?P<plate>[A-Z0-9]+)_(?P<well>[A-H][0-9]{2})'\n"
        "labels:\n  - {native: empty, class: clear}\n  - {native: xtal, class: crystals}\n"
        "  - {native: junk, class: other}\n  - {native: ppt, class: precipitate}\n"
    )
    cat = load_catalogue(catalogue_copy)
    doc = generate(tmp_path / "out", 80, seed=2, catalogue=cat, scale=SCALE, workers=1)
    info = doc["institutions"]["NEWLAB"]
    assert all(n >= 3 for n in info["classes"].values())
    records = list(readers.read_source(cat.get("NEWLAB"), tmp_path / "out"))
    assert Counter(r.native_label for r in records) == {
        k: v for k, v in info["labels"].items() if v
    }
    assert all(r.plate and r.well and r.image_id.startswith("NEWLAB-") for r in records)
    with Image.open(records[0].path) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "L", (64, 48))


# --------------------------------------------------------------------------- images


def test_images_have_each_imagers_look(dataset, catalogue):
    out, doc = dataset
    looks: dict[str, set[tuple[str, str, tuple[int, int]]]] = {}
    for source in catalogue:
        root = out / source.code
        for path in root.rglob("*"):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                with Image.open(path) as img:
                    looks.setdefault(source.code, set()).add((img.format, img.mode, img.size))
    full = (round(1280 * SCALE), round(960 * SCALE))
    assert looks["GSK"] == {("JPEG", "RGB", full)}
    assert looks["MERCK"] == {("JPEG", "RGB", full)}
    assert looks["BMS"] == {("JPEG", "RGB", (round(1024 * SCALE), round(768 * SCALE)))}
    assert {mode for _, mode, _ in looks["HWMRI"]} == {"L"}
    assert {fmt for fmt, _, _ in looks["HWMRI"]} == {"PNG", "JPEG"}
    assert {mode for _, mode, _ in looks["CSIRO"]} == {"RGB", "L"}
    assert doc["institutions"]["CSIRO"]["colour"] == {"grey": 6, "rgb": 6} or all(
        n > 0 for n in doc["institutions"]["CSIRO"]["colour"].values()
    )


def test_render_keeps_size_seed_and_refuses_unknown_classes():
    look = render_mod.Look(320, 240, colour=True)
    rng = np.random.default_rng(0)
    clear = render_mod.render("clear", frozenset(), look, rng, variant="plain")
    assert clear.shape == (240, 320, 3) and clear.dtype == np.uint8
    grey = render_mod.render("precipitate", frozenset({"heavy"}),
                             render_mod.Look(200, 200, colour=False, under_oil=True),
                             np.random.default_rng(1))
    assert grey.shape == (200, 200)
    a = render_mod.render("crystals", frozenset(), look, np.random.default_rng(3))
    b = render_mod.render("crystals", frozenset(), look, np.random.default_rng(3))
    assert np.array_equal(a, b)
    assert render_mod.hints_for("precipitate_and_crystal") >= {"precipitate"}
    assert "needles" in render_mod.hints_for("80", "needles")
    with pytest.raises(ValueError):
        render_mod.render("sand", frozenset(), look, rng)


def _texture(pixels: np.ndarray) -> float:
    """Fine structure in the middle of the frame, where the drop is: the mean absolute
    difference from a 2-pixel Gaussian blur, over the mean grey level (exposure and
    contrast are drawn per image whatever the class)."""
    from PIL import ImageFilter

    sharp = pixels.astype(np.float32)
    smooth = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2)),
                        dtype=np.float32)
    h, w = pixels.shape[:2]
    middle = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    return float(np.abs(sharp - smooth)[middle].mean() / (smooth[middle].mean() + 1.0))


@pytest.mark.parametrize("class_name", ["precipitate", "crystals"])
def test_classes_differ_in_texture_on_the_same_scene(class_name):
    """One scene drawn as clear and as another class: precipitate's grain and crystals'
    edges add fine structure that a classifier can see.

    The same seed gives both images the same well and drop (each variant of these
    classes keeps the geometry); the exposure, focus and noise drawn after the class
    content differ between the two, so the texture is compared over 24 scenes.
    """
    look = render_mod.Look(128, 96, colour=False)
    variants = render_mod.VARIANTS[class_name]
    scenes, more = 24, 0
    for seed in range(scenes):
        clear = render_mod.render("clear", frozenset(), look, np.random.default_rng(seed),
                                  variant="plain")
        drawn = render_mod.render(class_name, frozenset(), look, np.random.default_rng(seed),
                                  variant=variants[seed % len(variants)])
        more += _texture(drawn) > _texture(clear)
    assert more >= 18, f"{class_name} has more texture than clear in {more} of {scenes} scenes"


# --------------------------------------------------------------------------- shards


def test_marco_shards_use_the_published_keys(tmp_path, catalogue):
    doc = generate(tmp_path, 40, seed=3, catalogue=catalogue, scale=SCALE,
                   fmt="marco-shards", shards=3, workers=1)
    import tensorflow as tf

    names = sorted(p.name for p in tmp_path.glob("*.tfrecord"))
    assert names == [f"marco-0000{k}-of-00003.tfrecord" for k in range(3)] == doc["shards"]
    by_raw = catalogue.by_marco_raw_id()
    by_source = catalogue.by_marco_source_id()
    count = 0
    for name in names:
        for raw in tf.data.TFRecordDataset(str(tmp_path / name)).as_numpy_iterator():
            feats = tf.train.Example.FromString(raw).features.feature
            ints = {k: list(feats[k].int64_list.value) for k in feats if feats[k].int64_list.value}
            strs = {k: list(feats[k].bytes_list.value) for k in feats if feats[k].bytes_list.value}
            assert set(ints) == {"image/class/label", "image/class/raw", "image/class/source",
                                 "image/height", "image/width", "image/channels"}
            assert set(strs) == {"image/encoded", "image/class/text", "image/filename",
                                 "image/id", "image/format", "image/colorspace"}
            source, label = by_raw[ints["image/class/raw"][0]]
            assert by_source[ints["image/class/source"][0]] is source
            assert label.native == strs["image/class/text"][0].decode()
            assert ints["image/class/label"][0] == CLASS_IDS[label.class_name]
            fmt = strs["image/format"][0]
            img = tf.io.decode_image(strs["image/encoded"][0]).numpy()
            assert img.shape[:2] == (ints["image/height"][0], ints["image/width"][0])
            assert img.shape[2] == ints["image/channels"][0]
            assert fmt in (b"jpeg", b"png")
            assert strs["image/colorspace"][0] == (b"RGB" if img.shape[2] == 3 else b"Grayscale")
            count += 1
    assert count == 40 == sum(doc["classes"].values())


# --------------------------------------------------------------------------- preview, CLI


def test_preview_writes_a_png_even_without_real_drops(tmp_path, catalogue):
    from components.tools.synth.preview import make_preview

    info = make_preview(tmp_path / "p.png", seed=0, real_dir=tmp_path / "absent",
                        catalogue=catalogue, scale=0.1)
    assert info["real_missing"] and info["synthetic"] == 4 * len(catalogue)
    with Image.open(tmp_path / "p.png") as img:
        assert img.format == "PNG" and img.size[0] > 500


def test_cli_validates_and_generates(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    runner = CliRunner()
    bad = runner.invoke(main, ["synth", "--out", str(tmp_path / "x"), "--images", "0"])
    assert bad.exit_code == 2 and "--images" in bad.output
    missing = runner.invoke(main, ["synth"])
    assert missing.exit_code == 2 and "--out" in missing.output
    ok = runner.invoke(main, ["synth", "--out", str(tmp_path / "d"), "--images", "25",
                              "--scale", "0.1", "--workers", "1"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "d" / SUMMARY_FILE).read_text())["images"] == 25
    assert "GSK" in ok.output
    helped = runner.invoke(main, ["synth", "--help"])
    assert helped.exit_code == 0 and "preview" in helped.output
