"""The plate viewer: results to plates and drops, the static site, and the page in Chromium.

The browser tests drive Debian's chromium through chromium-driver with selenium
(``./bootstrap.sh`` installs both); where they are absent those tests skip, saying so.
Screenshots are kept under ``tests/artifacts/`` (git-ignored) besides pytest's tmp path.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from components.names import CLASS_NAMES
from components.tools.scoring import results
from components.tools.scoring.results import (
    ImagedAtParser,
    ResultRow,
    apply_imaged_at_pattern,
    write_results,
)
from components.tools.viewer import ResultsError, ViewerOptions, build_site
from components.tools.viewer.data import lay_out, parse_well, plate_format_for, read_results
from pipeline.cli import main
from tests.scoring_fixtures import serving_dir  # noqa: F401  (fixture)
from tests.trainer_fixtures import drop_image

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
DATES = ("20240101", "20240105", "20240112")
ROWS = "ABCDEFGH"


# ----------------------------------------------------------------------------- fixtures


def _probabilities(cls: int, crystals: float | None = None) -> tuple[float, ...]:
    """Four probabilities whose largest is ``cls``; crystals set when given."""
    p = [0.1, 0.1, 0.1, 0.1]
    if crystals is None:
        p[cls] = 0.7
    else:
        p[1] = crystals
        rest = (1 - crystals) / 3
        for i in (0, 2, 3):
            p[i] = rest
        if cls != 1:  # keep `cls` the largest when crystals is not
            p[cls] += 0.001
            p[(cls + 1) % 4 if (cls + 1) % 4 != 1 else 2] -= 0.001
    return tuple(p)


# Row A of plate PA is imaged on three dates; its crystal probability rises in A01.
TIME_COURSE = {"A01": (0.2, 0.55, 0.95), "A02": (0.1, 0.8, 0.85), "A03": (0.05, 0.1, 0.3)}


def make_results(folder: Path) -> tuple[Path, list[ResultRow]]:
    """Drop images and their results file: plate PA (96 wells, row A on three dates),
    plate PB (384 wells: a well P24), one loose image and one unreadable file."""
    drops = folder / "drops"
    drops.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []

    def image(name: str, shade: int) -> str:
        path = drops / name
        pixels = np.clip(rng.normal(shade, 20, (200, 240, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path)
        return str(path)

    for r, row_letter in enumerate(ROWS):
        for column in range(1, 13):
            well = f"{row_letter}{column:02d}"
            dates = DATES if row_letter == "A" else DATES[:1]
            for d, date in enumerate(dates):
                if well in TIME_COURSE:
                    cls = 1 if TIME_COURSE[well][d] > 0.5 else 3
                    probabilities = _probabilities(cls, TIME_COURSE[well][d])
                else:
                    probabilities = _probabilities((r * 12 + column + d) % 4)
                path = image(f"PA_{well}_{date}-0800.png", 60 + 15 * column)
                rows.append(ResultRow(path, probabilities, "PA", well))
    for well, cls in (("A01", 0), ("P24", 1), ("H13", 2)):
        path = image(f"PB_{well}_20240103.png", 120)
        rows.append(ResultRow(path, _probabilities(cls), "PB", well))
    rows.append(ResultRow(image("loose-shot.png", 200), _probabilities(1, 0.9)))
    bad = drops / "PA_B01_broken_20240101.png"
    bad.write_bytes(b"not an image")
    rows.append(ResultRow(str(bad), None, "", "", "cannot decode the image"))
    out = folder / "results.csv"
    ordered = sorted(rows, key=ResultRow.sort_key)
    write_results(iter(ordered), len(ordered), str(out))
    return out, rows


@pytest.fixture(scope="module")
def results_csv(tmp_path_factory) -> tuple[Path, list[ResultRow]]:
    return make_results(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="module")
def site(results_csv, tmp_path_factory) -> Path:
    """The site of :func:`make_results`, with a heatmap over A01's last image."""
    folder = tmp_path_factory.mktemp("site")
    target = next(r.path for r in results_csv[1] if r.path.endswith("PA_A01_20240112-0800.png"))
    Image.new("RGBA", (64, 64), (255, 255, 0, 160)).save(folder / "a01.heatmap.png")
    (folder / "heatmaps.csv").write_text(f"path,overlay\n{target},a01.heatmap.png\n")
    out = folder / "site"
    build_site(str(results_csv[0]), str(out),
               ViewerOptions(workers=2, heatmaps=str(folder / "heatmaps.csv")))
    return out


def load_data(site_dir: Path) -> dict:
    text = (site_dir / "data.js").read_text(encoding="utf-8")
    prefix = "window.MARCO_VIEWER_DATA = "
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


# ----------------------------------------------------------------------------- imaging time


@pytest.mark.parametrize(("path", "expected"), [
    ("/d/GSK781830_A01_20140114-080000.jpg", "2014-01-14T08:00:00"),
    ("/d/PLATE01_A01_20240101-0800.jpg", "2024-01-01T08:00:00"),
    ("/d/2014-01-14/PLATE7_B12.jpg", "2014-01-14"),
    ("/2013-05-01/x/20140114_P_A1.jpg", "2014-01-14"),  # the last date in the path
    ("/d/PLATE7_B12.jpg", ""),
    ("/d/GSK781830_A01.jpg", ""),  # six digits are no date
    ("/d/20140231/P_A1.jpg", ""),  # no 31 February
    ("/d/x1201401145/P_A1.jpg", ""),  # part of a longer number
])
def test_default_imaging_time_pattern(path, expected):
    assert ImagedAtParser().parse(path) == expected


def test_imaging_time_patterns_of_the_users_own():
    parser = ImagedAtParser(r"/(?P<day>\d\d)\.(?P<month>\d\d)\.(?P<year>\d{4})/")
    assert parser.parse("/imager/14.01.2014/P_A1.jpg") == "2014-01-14"
    iso = ImagedAtParser(r"_t(?P<imaged_at>[0-9-]{10}T[0-9:]{5})\.")
    assert iso.parse("/P_A1_t2014-01-14T08:30.jpg") == "2014-01-14T08:30:00"
    assert ImagedAtParser("").parse("/d/20140114.jpg") == ""
    with pytest.raises(ValueError, match="has neither an"):
        ImagedAtParser(r"(?P<when>\d+)")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        ImagedAtParser(r"(?P<year>")


def test_results_file_has_the_imaging_time_column(tmp_path):
    rows = [ResultRow(str(tmp_path / "P1_A01_20240105-0930.jpg"), (0.1, 0.6, 0.2, 0.1), "P1",
                      "A01"),
            ResultRow(str(tmp_path / "P1_A02.jpg"), (0.5, 0.2, 0.2, 0.1), "P1", "A02"),
            ResultRow(str(tmp_path / "x_20240106.jpg"), None, error="empty file")]
    out = tmp_path / "results.csv"
    write_results(iter(rows), len(rows), str(out))
    with open(out, newline="") as handle:
        got = list(csv.DictReader(handle))
    assert list(got[0]) == list(results.COLUMNS)
    assert [r["imaged_at"] for r in got] == ["2024-01-05T09:30:00", "", "2024-01-06"]
    assert got[2]["error"] == "empty file"
    # Another pattern, applied to the written file.
    found = apply_imaged_at_pattern(str(out), r"_(?P<year>\d{4})(?P<month>\d\d)(?P<day>\d\d)\.")
    with open(out, newline="") as handle:
        again = list(csv.DictReader(handle))
    assert found == 1
    assert [r["imaged_at"] for r in again] == ["", "", "2024-01-06"]
    assert [r["crystals"] for r in again] == [r["crystals"] for r in got]


# ----------------------------------------------------------------------------- plates and drops


def test_wells_and_plate_geometry():
    assert parse_well("A01").place(12) == parse_well("a1").place(12) == (0, 0)
    assert (parse_well("H12").row, parse_well("H12").column) == (7, 11)
    assert (parse_well("AF48").row, parse_well("AF48").column) == (31, 47)
    assert parse_well("0042").place(48) == (0, 41)
    assert parse_well("Q") is None and parse_well("A00") is None and parse_well("") is None
    fmt = plate_format_for
    assert fmt([parse_well("A01"), parse_well("H12")], "P") == 96
    assert fmt([parse_well("A01"), parse_well("H13")], "P") == 384
    assert fmt([parse_well("P24")], "P") == 384
    assert fmt([parse_well("Q01")], "P") == 1536
    assert fmt([parse_well("0097")], "P") == 384
    assert fmt([parse_well("A01")], "P", 1536) == 1536
    with pytest.raises(ResultsError, match="plate P7: well P24 does not fit a 96-well plate"):
        fmt([parse_well("A01"), parse_well("P24")], "P7", 96)
    with pytest.raises(ResultsError, match="well AG01 does not fit a 1536-well plate"):
        fmt([parse_well("AG01")], "P")


def test_drops_are_linked_across_dates(results_csv):
    csv_path, rows = results_csv
    images = read_results(str(csv_path))
    layout = lay_out(images)
    assert [(p.name, p.format, p.rows, p.columns) for p in layout.plates] == [
        ("PA", 96, 8, 12), ("PB", 384, 16, 24)]
    by_place = {(layout.plates[s.plate].name if s.plate >= 0 else "", s.well): s
                for s in layout.series}
    a01 = by_place[("PA", "A01")]
    assert [images[i].imaged_at for i in a01.images] == [
        "2024-01-01T08:00:00", "2024-01-05T08:00:00", "2024-01-12T08:00:00"]
    assert [round(images[i].crystals, 4) for i in a01.images] == list(TIME_COURSE["A01"])
    assert len(by_place[("PA", "B01")].images) == 1
    assert (by_place[("PB", "P24")].row, by_place[("PB", "P24")].column) == (15, 23)
    # 96 drops on PA, 3 on PB, and the loose and the unreadable image on their own.
    assert len(layout.series) == 96 + 3 + 2
    assert all(layout.series[layout.series_of[i]].images.count(i) == 1
               for i in range(len(images)))


def test_drop_and_institution_from_the_path(tmp_path):
    out = tmp_path / "results.csv"
    rows = [ResultRow(f"/lab/{inst}/P1_A01_{drop}_20240101.jpg", (0.1, 0.6, 0.2, 0.1), "P1",
                      "A01") for inst in ("HTLAB",) for drop in (1, 2, 3)]
    write_results(iter(rows), len(rows), str(out))
    from components.tools.viewer.data import PathFields

    images = read_results(str(out), fields=PathFields(r"/lab/(?P<institution>[^/]+)/",
                                                      r"_A01_(?P<drop>\d)_"))
    layout = lay_out(images)
    assert [s.drop for s in layout.series] == ["1", "2", "3"]
    assert {image.institution for image in images} == {"HTLAB"}
    with pytest.raises(ValueError, match=r"has no \(\?P<drop>"):
        PathFields(drop_pattern=r"_(\d)_")


def test_bad_results_files_are_refused_by_file_line_and_column(tmp_path):
    header = ",".join(results.COLUMNS)
    missing = tmp_path / "missing.csv"
    missing.write_text("path,clear,other\n/a.jpg,0.5,0.5\n")
    with pytest.raises(ResultsError, match=r"missing.csv: not a results file: no column "
                                           r"'crystals', 'precipitate'"):
        read_results(str(missing))
    bad_value = tmp_path / "bad.csv"
    bad_value.write_text(f"{header}\n/a.jpg,clear,0.7,0.1,0.1,0.1,P,A01,,\n"
                         f"/b.jpg,clear,0.7,lots,0.1,0.1,P,A02,,\n")
    with pytest.raises(ResultsError, match=r"bad.csv, line 3, column 'crystals': 'lots' is "
                                           r"not a probability"):
        read_results(str(bad_value))
    bad_time = tmp_path / "time.csv"
    bad_time.write_text(f"{header}\n/a.jpg,clear,0.7,0.1,0.1,0.1,P,A01,last tuesday,\n")
    with pytest.raises(ResultsError, match=r"time.csv, line 2, column 'imaged_at': "
                                           r"'last tuesday'"):
        read_results(str(bad_time))
    bad_well = tmp_path / "well.csv"
    bad_well.write_text(f"{header}\n/a.jpg,clear,0.7,0.1,0.1,0.1,P,Z-9,,\n")
    with pytest.raises(ResultsError, match=r"well.csv, row 1 \(/a.jpg\), column 'well': "
                                           r"'Z-9' is not a well name"):
        lay_out(read_results(str(bad_well)), source=str(bad_well))


# ----------------------------------------------------------------------------- the site


def test_site_is_self_contained_with_small_thumbnails(site, results_csv):
    _, rows = results_csv
    names = {p.name for p in site.iterdir()}
    assert {"index.html", "viewer.js", "viewer.css", "data.js", "thumbs"} <= names
    page = (site / "index.html").read_text()
    assert '<script src="data.js"' in page and '<script src="viewer.js"' in page
    for name in ("index.html", "viewer.js", "viewer.css"):
        text = (site / name).read_text()
        assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", text), name
        assert "@import" not in text and "url(http" not in text, name
    data = load_data(site)
    assert data["threshold"] == 0.7 and data["classes"] == list(CLASS_NAMES)
    assert len(data["images"]) == len(rows)
    thumbs = sorted((site / "thumbs").iterdir())
    assert len(thumbs) == len(rows) - 1  # not the unreadable file
    for thumb in thumbs[:5]:
        with Image.open(thumb) as image:
            assert image.format == "JPEG" and max(image.size) == 128
    by_path = {image["path"]: image for image in data["images"]}
    broken = next(p for p in by_path if "broken" in p)
    assert by_path[broken]["thumb"] == "" and by_path[broken]["class"] == ""
    assert by_path[broken]["error"] == "cannot decode the image"
    for image in data["images"]:
        if image["thumb"]:
            assert (site / image["thumb"]).is_file()
        if "heatmap" in image:
            assert image["path"].endswith("PA_A01_20240112-0800.png")
            assert (site / image["heatmap"]).is_file()


def test_rebuild_reuses_thumbnails_and_shows_heatmaps(results_csv, tmp_path):
    csv_path, rows = results_csv
    out = tmp_path / "site"
    first = build_site(str(csv_path), str(out))
    assert first.thumbnails_written == len(rows) - 1 and first.thumbnails_reused == 0
    assert first.drops == 101 and first.plates == 2
    assert first.dated == len(rows) - 1  # all but the loose image
    # A results file with a heatmap column (an overlay for one image).
    overlay = tmp_path / "overlay.png"
    Image.new("RGBA", (64, 64), (255, 0, 0, 128)).save(overlay)
    with_heatmap = tmp_path / "with-heatmap.csv"
    with open(csv_path, newline="") as source, open(with_heatmap, "w", newline="") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, [*reader.fieldnames, "heatmap"])
        writer.writeheader()
        for row in reader:
            row["heatmap"] = "overlay.png" if row["path"].endswith("PA_A01_20240112-0800.png") \
                else ""
            writer.writerow(row)
    second = build_site(str(with_heatmap), str(out))
    assert second.thumbnails_written == 0 and second.thumbnails_reused == len(rows) - 1
    data = load_data(out)
    heat = [image for image in data["images"] if "heatmap" in image]
    assert len(heat) == 1 and heat[0]["path"].endswith("PA_A01_20240112-0800.png")
    assert (out / heat[0]["heatmap"]).read_bytes() == overlay.read_bytes()
    # The heatmaps file marco explain writes: overlays relative to its folder.
    explained = tmp_path / "explain"
    (explained / "drops").mkdir(parents=True)
    Image.new("RGBA", (32, 32), (0, 255, 0, 128)).save(explained / "drops" / "b.heatmap.png")
    target = next(r.path for r in rows if r.path.endswith("PA_B03_20240101-0800.png"))
    (explained / "heatmaps.csv").write_text(
        "path,class,probability,heatmap,overlay,error\n"
        f"{target},crystals,0.5,drops/b.heatmap.npy,drops/b.heatmap.png,\n"
        "/elsewhere/x.png,,,,,cannot decode the image\n")
    third = build_site(str(csv_path), str(out),
                       ViewerOptions(heatmaps=str(explained / "heatmaps.csv")))
    assert third.heatmaps == 1
    heat = [image for image in load_data(out)["images"] if "heatmap" in image]
    assert [image["path"] for image in heat] == [target]
    assert (out / heat[0]["heatmap"]).read_bytes() == \
        (explained / "drops" / "b.heatmap.png").read_bytes()
    not_heatmaps = tmp_path / "other.csv"
    not_heatmaps.write_text("path,heatmap\n/a.png,a.npy\n")
    with pytest.raises(ResultsError, match=r"other.csv: not a heatmaps file: it needs the "
                                           r"columns 'path' and 'overlay'"):
        build_site(str(csv_path), str(out), ViewerOptions(heatmaps=str(not_heatmaps)))


def test_marco_view_command(results_csv, tmp_path):
    csv_path, rows = results_csv
    runner = CliRunner()
    result = runner.invoke(main, ["view", str(csv_path), "--out", str(tmp_path / "site"),
                                  "--plate-format", "384", "--quiet", "--threshold", "0.5"])
    assert result.exit_code == 0, result.output
    assert "plate viewer: 125 images, 101 drops on 2 plates" in result.output
    assert f"open {tmp_path / 'site' / 'index.html'}" in result.output
    data = load_data(tmp_path / "site")
    assert [p["format"] for p in data["plates"]] == [384, 384] and data["threshold"] == 0.5
    refused = runner.invoke(main, ["view", str(csv_path), "--out", str(tmp_path / "s2"),
                                   "--plate-format", "96"])
    assert refused.exit_code == 1
    assert "plate PB: well P24 does not fit a 96-well plate" in refused.output
    bad = runner.invoke(main, ["view", str(csv_path), "--out", str(tmp_path / "s3"),
                               "--drop-pattern", "(unclosed"])
    assert bad.exit_code == 1 and "drop pattern '(unclosed' is not a valid" in bad.output


@pytest.mark.slow
def test_marco_score_writes_the_imaging_time_and_the_site(serving_dir, tmp_path):  # noqa: F811
    rng = np.random.default_rng(1)
    drops = tmp_path / "plates"
    (drops / "PLATE9").mkdir(parents=True)
    names = ["PLATE9/PLATE9_A01_20240101-0800.jpg", "PLATE9/PLATE9_A01_20240108-0800.jpg",
             "PLATE9/PLATE9_B02_20240101-0800.png", "PLATE9/PLATE9_B02_notes.jpg"]
    for name in names[:3]:
        (drops / name).write_bytes(drop_image(int(rng.integers(0, 4)), rng))
    (drops / names[3]).write_bytes(b"")
    out, site_dir = tmp_path / "results.csv", tmp_path / "site"
    result = CliRunner().invoke(main, [
        "score", str(drops), "--model", str(serving_dir), "--out", str(out), "--quiet",
        "--html", str(site_dir), "--direct_num_workers=1"])
    assert result.exit_code == 0, result.output
    assert "plate viewer: 4 images, 2 drops on 1 plate (3 with an imaging time)" in \
        result.output, result.output
    with open(out, newline="") as handle:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    assert rows["PLATE9_A01_20240108-0800.jpg"]["imaged_at"] == "2024-01-08T08:00:00"
    assert rows["PLATE9_B02_notes.jpg"]["imaged_at"] == "" and rows["PLATE9_B02_notes.jpg"]["error"]
    data = load_data(site_dir)
    a01 = next(s for s in data["series"] if s["well"] == "A01")
    assert [data["images"][i]["imaged_at"][:10] for i in a01["images"]] == [
        "2024-01-01", "2024-01-08"]
    assert data["plates"][0]["format"] == 96
    # Another imaging-time pattern: the CSV file's column follows it.
    again = CliRunner().invoke(main, [
        "score", str(drops / "PLATE9" / "PLATE9_A01_20240101-0800.jpg"),
        "--model", str(serving_dir), "--out", str(out), "--quiet", "--direct_num_workers=1",
        "--imaged-at-pattern", r"_(?P<year>\d{4})(?P<month>\d\d)(?P<day>\d\d)-"])
    assert again.exit_code == 0, again.output
    with open(out, newline="") as handle:
        assert [r["imaged_at"] for r in csv.DictReader(handle)] == ["2024-01-01"]
    bad = CliRunner().invoke(main, [
        "score", str(drops), "--model", str(serving_dir), "--out", str(out),
        "--imaged-at-pattern", r"(?P<when>\d+)"])
    assert bad.exit_code == 2 and "--imaged-at-pattern" in bad.output


# ----------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (./bootstrap.sh installs "
                    "Debian's chromium and chromium-driver packages)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def open_site(driver, site_dir: Path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get((site_dir / "index.html").resolve().as_uri())
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return document.documentElement.dataset.ready") == "1")


def press(driver, *keys):
    from selenium.webdriver.common.action_chains import ActionChains

    actions = ActionChains(driver)
    for key in keys:
        actions.send_keys(key)
    actions.perform()


def visible_drops(driver) -> int:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#plates .drop'))"
        ".filter(e => e.offsetParent !== null).length")


def test_browser_plate_grid_has_the_plates_geometry(browser, site):
    from selenium.webdriver.common.by import By

    open_site(browser, site)
    plate = browser.find_element(By.CSS_SELECTOR, '.plate[data-plate="PA"]')
    wells = plate.find_elements(By.CSS_SELECTOR, ".well")
    assert len(wells) == 96
    assert [w.get_attribute("data-well") for w in wells[:13]] == [
        *(f"A{c}" for c in range(1, 13)), "B1"]
    assert len(plate.find_elements(By.CSS_SELECTOR, ".well.empty")) == 0
    pb = browser.find_element(By.CSS_SELECTOR, '.plate[data-plate="PB"]')
    assert len(pb.find_elements(By.CSS_SELECTOR, ".well")) == 384
    assert len(pb.find_elements(By.CSS_SELECTOR, ".well:not(.empty)")) == 3
    # Each drop: its thumbnail, its class colour, its crystal probability.
    a01 = plate.find_element(By.CSS_SELECTOR, '.well[data-well="A1"] .drop')
    assert "c-crystals" in a01.get_attribute("class")
    assert a01.find_element(By.CSS_SELECTOR, ".prob").text == "0.95"
    thumb = a01.find_element(By.TAG_NAME, "img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                  thumb) == 128
    # The images without a plate and well, and every drop shown at first.
    data = load_data(site)
    assert visible_drops(browser) == len(data["series"])
    assert browser.find_element(By.ID, "visible-count").text == str(len(data["series"]))


def test_browser_class_filter_shows_only_that_class(browser, site):
    from selenium.webdriver.common.by import By

    open_site(browser, site)
    data = load_data(site)
    latest = [data["images"][s["images"][-1]] for s in data["series"]]
    expected = sum(1 for image in latest if image["class"] == "crystals")
    assert 0 < expected < len(latest)
    for name in ("clear", "other", "precipitate", "none"):
        browser.find_element(By.CSS_SELECTOR, f'#class-filter input[value="{name}"]').click()
    assert visible_drops(browser) == expected
    assert browser.find_element(By.ID, "visible-count").text == str(expected)
    shown = browser.find_elements(By.CSS_SELECTOR, "#plates .drop:not(.filtered)")
    assert all("c-crystals" in e.get_attribute("class") for e in shown)
    # Plate and date filters narrow further: PA on its first date, crystals only.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "plate-filter")).select_by_value("PA")
    Select(browser.find_element(By.ID, "date-filter")).select_by_value("2024-01-01")
    first_day = [data["images"][i] for s in data["series"] if s["plate"] == 0
                 for i in s["images"] if data["images"][i]["imaged_at"].startswith("2024-01-01")]
    assert visible_drops(browser) == sum(1 for i in first_day if i["class"] == "crystals")
    assert not browser.find_element(By.CSS_SELECTOR, '.plate[data-plate="PB"]').is_displayed()


def test_browser_ranking_threshold_and_first_date_sort(browser, site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_site(browser, site)
    data = load_data(site)

    def hits(threshold):
        return sum(1 for s in data["series"]
                   if max((data["images"][i]["crystals"] or 0) for i in s["images"]) > threshold)

    items = browser.find_elements(By.CSS_SELECTOR, "#rank-list li")
    assert len(items) == hits(0.7) > 0
    assert items[0].find_element(By.CSS_SELECTOR, ".p").text == "0.95"
    probabilities = [float(i.find_element(By.CSS_SELECTOR, ".p").text) for i in items]
    assert probabilities == sorted(probabilities, reverse=True)
    number = browser.find_element(By.ID, "threshold-value")
    number.clear()
    number.send_keys("0.5\n")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", number)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rank-list li")) == hits(0.5)
    # Sorted by first date above the threshold: the drops above it on 1 January, then
    # PB P24 (3 January), then A01 and A02 (5 January; ties by probability), although
    # A01 is the highest; the loose image, which has no date, comes last.
    Select(browser.find_element(By.ID, "rank-sort")).select_by_value("first-date")
    firsts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#rank-list .first")]
    assert firsts == sorted(firsts) and firsts[0].endswith("2024-01-01T08:00:00")
    where = [e.text.split("\n")[0] for e in
             browser.find_elements(By.CSS_SELECTOR, "#rank-list .where")]
    on_first_day = sum(1 for f in firsts if "2024-01-01" in f)
    assert on_first_day > 0
    assert where[on_first_day:on_first_day + 3] == ["PB P24", "PA A01", "PA A02"]
    assert where[-1] == "loose-shot.png"


def test_browser_keyboard_steps_drops_and_time_course(browser, site, request, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    open_site(browser, site)
    browser.find_element(By.CSS_SELECTOR, '.plate[data-plate="PA"] .well[data-well="A1"] .drop') \
        .click()

    def detail():
        return (browser.find_element(By.ID, "detail-where").text,
                browser.find_element(By.ID, "detail-time").text,
                browser.find_element(By.ID, "detail-crystals").text)

    where, when, crystals = detail()
    assert where == "PA A01" and "2024-01-12" in when and "image 3 of 3" in when
    assert crystals == "0.95"
    # The last image has a heatmap over it; m hides and shows it.
    heatmap = browser.find_element(By.CSS_SELECTOR, "#detail .big img.heatmap")
    assert heatmap.is_displayed()
    press(browser, "m")
    assert not browser.find_element(By.CSS_SELECTOR, "#detail .big img.heatmap").is_displayed()
    press(browser, "m")
    strip = browser.find_elements(By.CSS_SELECTOR, "#timecourse li")
    assert [li.find_element(By.CSS_SELECTOR, ".p").text for li in strip] == [
        "0.20", "0.55", "0.95"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#timecourse circle")) == 3
    press(browser, Keys.ARROW_LEFT)
    assert detail()[1:] == ("imaged 2024-01-05T08:00:00 · image 2 of 3", "0.55")
    assert not browser.find_elements(By.CSS_SELECTOR, "#detail .big img.heatmap")
    press(browser, "h", "h")  # stops at the first image
    assert detail()[1:] == ("imaged 2024-01-01T08:00:00 · image 1 of 3", "0.20")
    press(browser, Keys.ARROW_RIGHT)
    assert detail()[2] == "0.55"
    assert "current" in browser.find_elements(By.CSS_SELECTOR, "#timecourse li")[1] \
        .get_attribute("class")
    press(browser, "j")  # next drop in the plate: A2, at its latest image
    assert detail()[0] == "PA A02" and detail()[2] == "0.85"
    press(browser, Keys.ARROW_DOWN, Keys.ARROW_DOWN, "k")
    assert detail()[0] == "PA A03"
    assert "selected" in browser.find_element(
        By.CSS_SELECTOR, '.well[data-well="A3"] .drop').get_attribute("class")
    # The page as the test left it, kept as an artifact.
    shot = tmp_path / "viewer-time-course.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as image:
        assert image.size[0] >= 1000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / f"{request.node.name}.png")
