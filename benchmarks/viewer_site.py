"""The plate viewer at scale: build time and site size, and how fast the page opens.

Renders GSK-size drop images (1280x960 JPEG, from the synthetic generator) once, then
lays them out as the imager would name them: 96-well plates, every well imaged on three
dates (``PLATE0007_B05_20240108-0800.jpg``, hard links to the rendered files), with
random class probabilities, and writes a results file like ``marco score``'s. Then:

* ``build``: :func:`components.tools.viewer.build_site` (what ``marco view`` runs) on
  1,000 and on 10,000 images from an empty folder: seconds, seconds and MB per 1,000
  images; then the 10,000-image site rebuilt with its thumbnails in place;
* ``open``: the 10,000-image page opened from disk in headless Chromium (Debian's
  chromium and chromium-driver, through selenium), ``--repeats`` times after one warm-up
  load: milliseconds from navigation start to the page's ready mark (everything
  rendered: 10,000 drops in their grids, the ranking, the filters) and to the load
  event; the wall time of the whole ``get`` as the test driver sees it.

Goals: a 10,000-image site under 300 MB; the page ready in under 2 s. Build times
are wall seconds and CPU seconds (this process and the thumbnail workers): on a
machine other work shares, the CPU figure is the steadier one.

Run: ``.venv/bin/python benchmarks/viewer_site.py`` (about 3 minutes on 2 cores, plus
rendering the images the first time). The JSON records the load average: other
processes on the machine slow every figure.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import click
import numpy as np

import components  # noqa: F401  (process set-up before TensorFlow)
from components.names import CLASS_NAMES
from components.tools.scoring.results import COLUMNS, ResultRow, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "viewer_site.json"
DEFAULT_DATA = Path(tempfile.gettempdir()) / "marco-viewer-benchmark"
DATES = ("20240101-0800", "20240108-0800", "20240115-0800")
ROWS = "ABCDEFGH"
SIZE_GOAL_MB = 300.0
OPEN_GOAL_MS = 2000.0


def render_images(base: Path, count: int, seed: int) -> list[Path]:
    """``count`` distinct GSK-size JPEGs from the synthetic generator (made once), as
    the scoring benchmark makes them."""
    from scoring_throughput import render_images as render_gsk  # this folder's script

    return sorted(render_gsk(base, count, seed).glob("*.jpg"))


def plate_run(sources: list[Path], folder: Path, count: int, seed: int) -> Path:
    """A results file of ``count`` images on 96-well plates imaged on three dates."""
    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    index = 0
    plate = 0
    while index < count:
        plate += 1
        for date in DATES:
            for row in ROWS:
                for column in range(1, 13):
                    if index == count:
                        break
                    well = f"{row}{column:02d}"
                    target = images / f"PLATE{plate:04d}_{well}_{date}.jpg"
                    if not target.exists():
                        os.link(sources[index % len(sources)], target)
                    probabilities = tuple(float(p) for p in rng.dirichlet((1, 0.4, 0.6, 1)))
                    rows.append(ResultRow(str(target), probabilities, f"PLATE{plate:04d}",
                                          well))
                    index += 1
    out = folder / "results.csv"
    rows.sort(key=ResultRow.sort_key)
    write_results(iter(rows), len(rows), str(out))
    with open(out, newline="") as handle:
        assert next(csv.reader(handle)) == list(COLUMNS)
    return out


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the thumbnail workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def build(csv_path: Path, site: Path, workers: int) -> dict:
    from components.tools.viewer import ViewerOptions, build_site

    cpu = _cpu_seconds()
    summary = build_site(str(csv_path), str(site), ViewerOptions(workers=workers))
    cpu = _cpu_seconds() - cpu
    return {
        "images": summary.images,
        "plates": summary.plates,
        "drops": summary.drops,
        "seconds": round(summary.seconds, 2),
        "thumbnails_written": summary.thumbnails_written,
        "thumbnails_reused": summary.thumbnails_reused,
        "site_mb": round(summary.bytes / 1e6, 2),
        "data_js_mb": round((site / "data.js").stat().st_size / 1e6, 2),
        "seconds_per_1000": round(summary.seconds / summary.images * 1000, 2),
        "cpu_seconds_per_1000": round(cpu / summary.images * 1000, 2),
        "mb_per_1000": round(summary.bytes / 1e6 / summary.images * 1000, 2),
    }


def open_times(site: Path, repeats: int) -> dict:
    """Milliseconds to the page's ready mark and load event in headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    url = (site / "index.html").resolve().as_uri()
    ready, loaded, wall = [], [], []
    try:
        for attempt in range(repeats + 1):
            driver.get("about:blank")
            started = time.perf_counter()
            driver.get(url)
            WebDriverWait(driver, 60).until(
                lambda d: d.execute_script("return document.documentElement.dataset.ready")
                == "1")
            elapsed = (time.perf_counter() - started) * 1000
            timing = driver.execute_script(
                "var t = performance.getEntriesByType('navigation')[0];"
                "return [window.MARCO_VIEWER_READY_MS, t.loadEventEnd,"
                " document.querySelectorAll('#plates .drop').length];")
            if attempt == 0:
                drops = timing[2]
                continue  # warm-up: the file cache
            ready.append(timing[0])
            loaded.append(timing[1])
            wall.append(elapsed)
        version = driver.capabilities.get("browserVersion", "")
    finally:
        driver.quit()
    return {
        "chromium": version,
        "drops_rendered": drops,
        "ready_ms_median": round(statistics.median(ready), 1),
        "ready_ms_max": round(max(ready), 1),
        "load_event_ms_median": round(statistics.median(loaded), 1),
        "driver_get_wall_ms_median": round(statistics.median(wall), 1),
        "repeats": repeats,
    }


@click.command()
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DATA,
              show_default=True, help="Cache of the rendered images, and the sites.")
@click.option("--sizes", default="1000,10000", show_default=True,
              help="Numbers of images to build sites of; the largest is opened.")
@click.option("--rendered", type=int, default=1000, show_default=True,
              help="Distinct images rendered (the run links them under new names).")
@click.option("--workers", type=int, default=os.cpu_count() or 1, show_default=True,
              help="Processes writing thumbnails.")
@click.option("--repeats", type=int, default=5, show_default=True,
              help="Page loads measured (after one warm-up).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS,
              show_default=True)
def main(data: Path, sizes: str, rendered: int, workers: int, repeats: int, seed: int,
         out: Path) -> None:
    """Measure the plate viewer's build time, size and page open time; write the JSON."""
    load_before = os.getloadavg()
    sources = render_images(data / "rendered", rendered, seed)
    counts = sorted(int(s) for s in sizes.split(","))
    figures = {"builds": {}}
    for count in counts:
        folder = data / f"run-{count}"
        if folder.exists():
            shutil.rmtree(folder)
        csv_path = plate_run(sources, folder, count, seed)
        site = folder / "site"
        click.echo(f"building the site of {count} images ...")
        first = build(csv_path, site, workers)
        click.echo(json.dumps(first))
        figures["builds"][str(count)] = first
    largest = data / f"run-{counts[-1]}"
    click.echo(f"rebuilding the site of {counts[-1]} images (thumbnails in place) ...")
    figures["rebuild"] = build(largest / "results.csv", largest / "site", workers)
    click.echo(json.dumps(figures["rebuild"]))
    click.echo(f"opening the site of {counts[-1]} images in headless Chromium ...")
    figures["open"] = open_times(largest / "site", repeats)
    click.echo(json.dumps(figures["open"]))
    biggest = figures["builds"][str(counts[-1])]
    figures["goals"] = {
        "site_mb_10000_images": round(biggest["mb_per_1000"] * 10, 1),
        "site_under_300_mb_per_10000": biggest["mb_per_1000"] * 10 < SIZE_GOAL_MB,
        "page_ready_under_2_s": figures["open"]["ready_ms_max"] < OPEN_GOAL_MS,
    }
    result = {
        "benchmark": "viewer_site",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "image_size": "1280x960 JPEG (synthetic GSK)",
        "thumbnail_px": 128,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_at_end": os.getloadavg(),
        "platform": platform.platform(),
        "classes": list(CLASS_NAMES),
        **figures,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result["goals"]))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
