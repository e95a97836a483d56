"""SmoothGrad speed of the ``paper`` model on the CPU: seconds per heatmap at 599 px.

Exports the ``paper`` preset with random weights (the speed is the one of the trained
model: same layers, same operations) as a serving folder, loads it the way
``marco explain`` does (:meth:`components.tools.explain.smoothgrad.PixelModel.
from_saved_model`: the network's call function from the SavedModel), then measures:

* ``first_image_s``: the first heatmap, which traces the gradient graph;
* ``heatmap``: :meth:`SmoothGrad.explain` on 1280x960 drop photographs (the twelve real
  MARCO images beside the project, else synthetic ones) with the command's default
  settings: seconds and CPU seconds per image, seconds per noisy sample;
* ``command``: :func:`components.tools.explain.run.explain_paths` on three of the
  images, what the command runs per image (heatmap, locating the hottest region, the
  599 px PNG overlay and the array file);
* ``batch_sizes``: seconds per sample at other batch sizes, and each one's peak
  resident memory growth.

Goal: a heatmap in seconds (under 10 s) per image on 2 cores with the default
settings. On a shared machine the wall time grows with the other processes' load;
the CPU time per image divided by the cores estimates the figure on idle cores.

Run: ``.venv/bin/python benchmarks/smoothgrad.py`` (about 4 minutes on 2 idle cores,
plus about 3 minutes to export the model the first time). The JSON records the load
average at the start and the end.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import click

import components  # noqa: F401  (process set-up before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "smoothgrad.json"
REAL_DROPS = Path(__file__).resolve().parents[2] / "shared" / "real-drops"
DEFAULT_MODEL = Path(tempfile.gettempdir()) / "marco-smoothgrad-benchmark" / "serving"
GOAL_SECONDS_PER_IMAGE = 10.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def export_paper_model(folder: Path) -> tuple[Path, float | None]:
    """The untrained ``paper`` model as a serving folder (made once); export seconds."""
    version = folder / "1"
    if (version / "saved_model.pb").is_file():
        return folder, None
    from components.model import inception
    from components.trainer.export import export_model

    click.echo(f"exporting the untrained paper model to {folder} (once) ...")
    started = time.perf_counter()
    export_model(inception.build_model(inception.PAPER), str(version))
    return folder, round(time.perf_counter() - started, 1)


def drop_images(count: int) -> tuple[list[Path], str]:
    """``count`` drop photographs: the real ones if present, else synthetic JPEGs."""
    real = sorted(REAL_DROPS.glob("*.jpeg"))
    if real:
        return [real[i % len(real)] for i in range(count)], f"real MARCO drops ({REAL_DROPS})"
    import numpy as np
    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="marco-smoothgrad-images-"))
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        path = folder / f"drop{index}.jpg"
        Image.fromarray(small).resize((1280, 960), Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths, "synthetic 1280x960 JPEGs"


def _stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


@click.command()
@click.option("--images", type=click.IntRange(min=1), default=6, show_default=True,
              help="Images timed for the heatmap and for the command.")
@click.option("--batch-sizes", default="4,16", show_default=True,
              help="Other batch sizes to time (one image each), comma-separated.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_MODEL, show_default=True,
              help="Serving folder for the exported paper model (reused if there).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS,
              show_default=True)
def main(images: int, batch_sizes: str, model_dir: Path, out: Path) -> None:
    """Seconds per SmoothGrad heatmap of the paper model at 599 px on this machine's CPUs."""
    from components.names import CLASS_IDS
    from components.tools.explain.run import ExplainOptions, explain_paths
    from components.tools.explain.smoothgrad import PixelModel, SmoothGrad, SmoothGradSettings
    from components.tools.scoring.model import resolve_model

    started = time.perf_counter()
    load_at_start = os.getloadavg()
    serving, export_seconds = export_paper_model(model_dir)
    version = resolve_model(str(serving))
    t0, c0 = time.perf_counter(), _cpu_seconds()
    network = PixelModel.from_saved_model(version.path)
    load_seconds, load_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    rss_after_load = _peak_rss_mb()
    paths, source = drop_images(images)
    crystals = CLASS_IDS["crystals"]
    settings = SmoothGradSettings()

    smoothgrad = SmoothGrad(network, settings)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    smoothgrad.explain(paths[0].read_bytes(), crystals)
    first_image, first_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    click.echo(f"model loaded in {load_seconds:.1f} s ({load_cpu:.1f} CPU s); first heatmap "
               f"(tracing) {first_image:.1f} s ({first_cpu:.1f} CPU s)")

    seconds, cpu = [], []
    for path in paths:
        data = path.read_bytes()
        t0, c0 = time.perf_counter(), _cpu_seconds()
        smoothgrad.explain(data, crystals)
        seconds.append(time.perf_counter() - t0)
        cpu.append(_cpu_seconds() - c0)
        click.echo(f"  heatmap of {path.name}: {seconds[-1]:.2f} s ({cpu[-1]:.1f} CPU s)")
    rss_heatmaps = _peak_rss_mb()

    with tempfile.TemporaryDirectory(prefix="marco-smoothgrad-out-") as scratch:
        t0 = time.perf_counter()
        rows = explain_paths([str(p) for p in sorted(set(paths))[:3]], smoothgrad, scratch,
                             ExplainOptions(settings=settings, locate=True))
        command_seconds = (time.perf_counter() - t0) / len(rows)
        overlay_kb = statistics.median(
            (Path(scratch) / row.overlay).stat().st_size / 1024 for row in rows)
    assert not any(row.error for row in rows), [row.error for row in rows if row.error]
    click.echo(f"  explain_paths (with files and --locate): {command_seconds:.2f} s an image")

    by_batch = {}
    for batch in [int(b) for b in batch_sizes.split(",") if b.strip()]:
        variant = SmoothGrad(network, SmoothGradSettings(batch_size=batch))
        data = paths[0].read_bytes()
        variant.explain(data, crystals)  # traces this batch size
        t0 = time.perf_counter()
        variant.explain(data, crystals)
        elapsed = time.perf_counter() - t0
        by_batch[batch] = {"seconds_per_image": round(elapsed, 2),
                           "seconds_per_sample": round(elapsed / settings.samples, 3),
                           "peak_rss_mb_so_far": round(_peak_rss_mb())}
        click.echo(f"  batch {batch}: {elapsed:.2f} s an image")

    median = statistics.median(seconds)
    cpus = len(os.sched_getaffinity(0))
    # What the heatmap would take with every core to itself: its CPU time spread over
    # them. An estimate (it assumes the cores are kept busy), but one that other
    # processes hardly change, unlike the wall time of a shared machine.
    idle_estimate = statistics.median(cpu) / cpus
    result = {
        "benchmark": "smoothgrad",
        "model": "paper preset (599x599 input, random weights)",
        "images": source,
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_available": cpus,
            "platform": platform.platform(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "settings": {"samples": settings.samples, "noise": settings.noise,
                     "batch_size": settings.batch_size, "seed": settings.seed,
                     "class": "crystals", "images_timed": len(paths)},
        "export_s": export_seconds,
        "model_load_s": round(load_seconds, 1),
        "model_load_cpu_s": round(load_cpu, 1),
        "first_image_s_incl_tracing": round(first_image, 1),
        "first_image_cpu_s_incl_tracing": round(first_cpu, 1),
        "heatmap_seconds_per_image": _stats(seconds),
        "heatmap_cpu_seconds_per_image": _stats(cpu),
        "seconds_per_sample": round(median / settings.samples, 3),
        "estimated_seconds_per_image_on_idle_cores": round(idle_estimate, 2),
        "command_seconds_per_image_with_files_and_locate": round(command_seconds, 2),
        "overlay_png_kb_median": round(overlay_kb, 1),
        "batch_sizes": {str(k): v for k, v in by_batch.items()},
        "peak_rss_mb": {"after_load": round(rss_after_load), "after_heatmaps": round(rss_heatmaps),
                        "at_end": round(_peak_rss_mb())},
        "goal_seconds_per_image": GOAL_SECONDS_PER_IMAGE,
        "meets_goal": median < GOAL_SECONDS_PER_IMAGE,
        "meets_goal_on_idle_cores_estimate": idle_estimate < GOAL_SECONDS_PER_IMAGE,
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    verdict = "met" if result["meets_goal"] else "missed"
    click.echo(f"SmoothGrad at 599 px, {settings.samples} samples (batch {settings.batch_size}) "
               f"on {os.cpu_count()} cores: median {median:.2f} s an image "
               f"({median / settings.samples:.3f} s a sample), "
               f"{statistics.median(cpu):.1f} CPU s; "
               f"goal < {GOAL_SECONDS_PER_IMAGE:.0f} s: {verdict}")
    click.echo(f"  on {cpus} idle cores (CPU time / cores): about {idle_estimate:.1f} s an image; "
               f"load average {os.getloadavg()[0]:.1f} at the end")
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
