"""Scoring speed of the ``paper`` model: single-image latency and ``marco score`` throughput.

Exports the ``paper`` preset (untrained weights: the speed is the same) and renders
GSK-size drop images (1280x960 JPEG, from the synthetic generator) once, then measures,
each in a fresh subprocess:

* ``latency``: one JPEG per call, bytes in, classes and scores out, through the
  SavedModel's ``serving_default`` signature: with TensorFlow 2's loader (what a Python
  client does) and in a session as TF Serving runs it (:class:`components.tools.serving.
  ServedModel`). Median and 95th percentile against the paper's 260 ms per standalone
  query on a cloud instance (goal here: median under 150 ms);
* ``plain``: the same images through the ``probabilities`` signature in a plain loop,
  ``--batch`` images per call, reading each file in turn, with TensorFlow 2's loader;
* ``plain_session``: the same loop on the session :func:`components.tools.scoring.beam.
  score_images` uses, which separates the loaders' speeds from the pipeline's;
* ``score``: :func:`components.tools.scoring.beam.score_images`, what ``marco score`` runs
  (DirectRunner, worker threads sharing one model), CSV file included.

The three alternate ``--repeats`` times. Throughput is compared without the model
loading (each run reports its own) and end to end, on each mode's best run (the one
least slowed by other processes) and on the median. Each run also reports the CPU time
it used per image, which other processes disturb much less than the wall time. Goals:
``score`` at least 90% of the plain loop, and faster once decoding runs beside the
network.

With ``--memory-sizes`` (default 1,000 and 10,000), ``score`` also runs the ``tiny``
model on that many images (hard links to the rendered ones under new names) and
reports each run's peak resident memory: it should not grow with the number of images.

Run: ``.venv/bin/python benchmarks/scoring_throughput.py`` (about 6 minutes on 2 cores).
Other processes on the machine slow every figure; the JSON records the load average.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

import components  # noqa: F401  (process set-up before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "scoring_throughput.json"
DEFAULT_DATA = Path(tempfile.gettempdir()) / "marco-scoring-benchmark"
PAPER_LATENCY_MS = 260.0
LATENCY_GOAL_MS = 150.0
THROUGHPUT_GOAL = 0.9


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export(preset: str, folder: Path) -> Path:
    """The preset's model, untrained, as a serving folder (made once)."""
    version = folder / "1"
    if (version / "saved_model.pb").is_file():
        return folder
    from components.model import inception
    from components.trainer.export import export_model

    click.echo(f"exporting the untrained {preset} model to {folder} (once) ...")
    config = inception.PRESETS[preset]
    export_model(inception.build_model(config), str(version))
    return folder


def render_images(base: Path, count: int, seed: int) -> Path:
    """``count`` distinct GSK-size JPEGs from the synthetic generator (made once)."""
    from components.catalogue import Catalogue, load_catalogue
    from components.tools.synth.writer import generate

    summary = base / "synth.json"
    if not (summary.is_file() and json.loads(summary.read_text())["images"] == count):
        click.echo(f"rendering {count} GSK-size images in {base} (once) ...")
        gsk = load_catalogue().get("GSK")
        generate(base, count, seed, catalogue=Catalogue((gsk,)), scale=1.0, overwrite=True,
                 progress=True)
    return base / "GSK" / "images"


def linked_folder(images: Path, folder: Path, count: int) -> Path:
    """A folder of ``count`` images: hard links to ``images`` under new names."""
    sources = sorted(images.glob("*.jpg"))
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        source = sources[index % len(sources)]
        target = folder / f"{source.stem}_{index:06d}.jpg"
        if not target.exists():
            os.link(source, target)
    return folder


# ----------------------------------------------------------------------------- measurements


def measure_latency(model_dir: Path, images: Path, calls: int) -> dict:
    """Per-call latency of serving_default on one JPEG, with both loaders."""
    import numpy as np
    import tensorflow as tf

    from components.tools.serving import ServedModel

    data = [p.read_bytes() for p in sorted(images.glob("*.jpg"))[:20]]

    def timings(call) -> dict:
        for image in data[:3]:
            call(image)  # warm-up: first-call graph optimisation
        seconds = []
        for index in range(calls):
            start = time.perf_counter()
            call(data[index % len(data)])
            seconds.append(time.perf_counter() - start)
        ms = np.array(seconds) * 1000
        return {"calls": calls, "median_ms": round(float(np.median(ms)), 1),
                "p95_ms": round(float(np.percentile(ms, 95)), 1),
                "min_ms": round(float(ms.min()), 1)}

    start = time.perf_counter()
    loaded = tf.saved_model.load(str(model_dir))
    tf2_load = time.perf_counter() - start
    signature = loaded.signatures["serving_default"]

    def tf2_call(image: bytes) -> None:
        outputs = signature(image_bytes=tf.constant([image]))
        outputs["classes"].numpy(), outputs["scores"].numpy()

    start = time.perf_counter()
    served = ServedModel(str(model_dir))
    session_load = time.perf_counter() - start

    def session_call(image: bytes) -> None:
        served.run("serving_default", {"image_bytes": np.array([image], dtype=object)})

    return {
        "tf2_loader": {"load_s": round(tf2_load, 1), **timings(tf2_call)},
        "session_as_tf_serving": {"load_s": round(session_load, 1), **timings(session_call)},
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_plain(model_dir: Path, images: Path, batch: int, session: bool) -> dict:
    """The probabilities signature in a plain loop over the files, ``batch`` per call."""
    import numpy as np
    import tensorflow as tf

    from components.tools.serving import ServedModel

    paths = sorted(str(p) for p in images.iterdir())
    started, cpu = time.perf_counter(), _cpu_seconds()
    if session:
        served = ServedModel(str(model_dir))

        def probabilities(data: list[bytes]) -> np.ndarray:
            inputs = {"image_bytes": np.array(data, dtype=object)}
            return served.run("probabilities", inputs)["probabilities"]
    else:
        signature = tf.saved_model.load(str(model_dir)).signatures["probabilities"]

        def probabilities(data: list[bytes]) -> np.ndarray:
            return signature(image_bytes=tf.constant(data))["probabilities"].numpy()

    load, load_cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    rows = 0
    for first in range(0, len(paths), batch):
        data = []
        for path in paths[first : first + batch]:
            with open(path, "rb") as handle:
                data.append(handle.read())
        rows += len(probabilities(data))
    total = time.perf_counter() - started
    return {"mode": "plain_session" if session else "plain", "images": rows,
            "load_s": round(load, 2), "total_s": round(total, 2),
            "cpu_ms_per_image_without_load":
                round((_cpu_seconds() - cpu - load_cpu) / rows * 1000, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def measure_score(model_dir: Path, images: Path, batch: int, workers: int) -> dict:
    """``marco score``'s pipeline on the folder, CSV file included."""
    import apache_beam  # noqa: F401  (imports are not part of the timing)

    from components.tools.scoring.beam import ScoreOptions, score_images

    cpu = _cpu_seconds()
    with tempfile.TemporaryDirectory() as scratch:
        summary = score_images(
            [str(images)], str(model_dir), str(Path(scratch) / "results.csv"),
            ScoreOptions(batch_size=batch, workers=workers, progress=False),
        )
    return {"mode": "score", "images": summary.results.images,
            "errors": summary.results.errors,
            "load_s": round(summary.model_load_seconds or 0.0, 2),
            "total_s": round(summary.seconds, 2),
            "cpu_ms_per_image_with_load":
                round((_cpu_seconds() - cpu) / summary.results.images * 1000, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def _subprocess(*args: str) -> dict:
    command = [sys.executable, __file__, *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise click.ClickException(f"{' '.join(args[:2])} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rates(run: dict) -> dict:
    run["images_per_s"] = round(run["images"] / run["total_s"], 2)
    run["images_per_s_without_load"] = round(run["images"] / (run["total_s"] - run["load_s"]), 2)
    return run


MODES = ("plain", "plain_session", "score")


def _summary(runs: dict[str, list[dict]], key: str) -> dict[str, dict[str, float]]:
    """Best and median of ``key`` per mode."""
    return {mode: {"best": max(r[key] for r in mode_runs),
                   "median": round(statistics.median(r[key] for r in mode_runs), 2)}
            for mode, mode_runs in runs.items()}


@click.command()
@click.option("--images", default=200, show_default=True, help="GSK-size images scored.")
@click.option("--batch", default=16, show_default=True, help="Images per model call.")
@click.option("--workers", default=2, show_default=True, help="marco score worker threads.")
@click.option("--repeats", default=3, show_default=True, help="Runs of each mode, alternating.")
@click.option("--calls", default=40, show_default=True, help="Single-image latency calls.")
@click.option("--memory-sizes", default="1000,10000", show_default=True,
              help="Image counts for the tiny-model memory runs ('' to skip).")
@click.option("--seed", default=3, show_default=True)
@click.option("--data", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=True,
              help="Cache of the exported models and rendered images.")
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
@click.option("--measure", type=click.Choice(["latency", *MODES]), default=None, hidden=True)
@click.option("--model", type=click.Path(path_type=Path), default=None, hidden=True)
@click.option("--folder", type=click.Path(path_type=Path), default=None, hidden=True)
def main(images: int, batch: int, workers: int, repeats: int, calls: int, memory_sizes: str,
         seed: int, data: Path, out: Path, measure: str | None, model: Path | None,
         folder: Path | None) -> None:
    """Measure scoring latency and throughput; write benchmarks/results/scoring_throughput.json."""
    if measure is not None:
        if measure == "latency":
            figures = measure_latency(model, folder, calls)
        elif measure == "score":
            figures = measure_score(model, folder, batch, workers)
        else:
            figures = measure_plain(model, folder, batch, session=measure == "plain_session")
        click.echo(json.dumps(figures))
        return

    started = time.perf_counter()
    load_at_start = os.getloadavg()
    paper = export("paper", data / "paper-serving")
    rendered = render_images(data / "rendered", images, seed)
    folder = linked_folder(rendered, data / f"set-{images}", images)
    # Warms the file cache and the bytecode; not reported.
    _subprocess("--measure", "plain", "--model", str(paper / "1"), "--folder",
                str(linked_folder(rendered, data / "set-8", 8)), "--batch", str(batch))

    click.echo(f"[{time.perf_counter() - started:5.0f}s] single-image latency ...")
    latency = _subprocess("--measure", "latency", "--model", str(paper / "1"), "--folder",
                          str(folder), "--calls", str(calls))
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for repeat in range(repeats):
        for mode in MODES:
            click.echo(f"[{time.perf_counter() - started:5.0f}s] {mode} {repeat + 1}/{repeats} ...")
            model_arg = str(paper) if mode == "score" else str(paper / "1")
            runs[mode].append(_rates(_subprocess(
                "--measure", mode, "--model", model_arg, "--folder", str(folder),
                "--batch", str(batch), "--workers", str(workers))))

    memory = []
    sizes = [int(s) for s in memory_sizes.split(",") if s.strip()]
    if sizes:
        tiny = export("tiny", data / "tiny-serving")
        for size in sizes:
            click.echo(f"[{time.perf_counter() - started:5.0f}s] memory: tiny model, "
                       f"{size} images ...")
            memory.append(_rates(_subprocess(
                "--measure", "score", "--model", str(tiny), "--folder",
                str(linked_folder(rendered, data / f"set-{size}", size)),
                "--batch", str(batch), "--workers", str(workers))))

    without_load = _summary(runs, "images_per_s_without_load")
    end_to_end = _summary(runs, "images_per_s")
    ratios = {
        f"score_vs_{base}_{name}_{stat}": round(table["score"][stat] / table[base][stat], 3)
        for base in ("plain", "plain_session")
        for name, table in (("without_load", without_load), ("end_to_end", end_to_end))
        for stat in ("best", "median")
    }
    headline = ratios["score_vs_plain_without_load_best"]
    result = {
        "benchmark": "scoring_throughput",
        "model": "paper preset (599x599 input, untrained weights)",
        "image_size": "1280x960 JPEG (synthetic GSK)",
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "settings": {"images": images, "batch": batch, "workers": workers,
                     "repeats": repeats, "latency_calls": calls},
        "latency": latency,
        "paper_latency_ms": PAPER_LATENCY_MS,
        "latency_goal_ms": LATENCY_GOAL_MS,
        "meets_latency_goal": latency["tf2_loader"]["median_ms"] < LATENCY_GOAL_MS,
        "throughput_runs": runs,
        "images_per_s_without_load": without_load,
        "images_per_s_end_to_end": end_to_end,
        "ratios": ratios,
        "throughput_goal": THROUGHPUT_GOAL,
        "meets_throughput_goal": headline >= THROUGHPUT_GOAL,
        "faster_than_plain_loop": headline > 1.0,
        "memory_runs_tiny_model": memory,
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    if len(memory) > 1:
        result["memory_growth"] = round(memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"], 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, figures in latency.items():
        click.echo(f"latency {name:>22}: median {figures['median_ms']} ms, p95 "
                   f"{figures['p95_ms']} ms over {figures['calls']} calls (paper: "
                   f"{PAPER_LATENCY_MS:.0f} ms; goal < {LATENCY_GOAL_MS:.0f} ms)")
    for mode, mode_runs in runs.items():
        for run in mode_runs:
            click.echo(f"{mode:>14}: {run}")
    click.echo("images/s without model loading (best, median): " + ", ".join(
        f"{mode} {v['best']}, {v['median']}" for mode, v in without_load.items()))
    click.echo(f"score vs plain loop without loading: {headline:.2f}x best, "
               f"{ratios['score_vs_plain_without_load_median']:.2f}x median (goal >= "
               f"{THROUGHPUT_GOAL}); vs the same loop on score's session: "
               f"{ratios['score_vs_plain_session_without_load_best']:.2f}x best; end to end "
               f"{ratios['score_vs_plain_end_to_end_best']:.2f}x best")
    for run in memory:
        click.echo(f"memory: {run['images']} images, peak {run['peak_rss_mb']} MB, "
                   f"{run['images_per_s']} images/s")
    click.echo(f"written to {out} in {result['runtime_s']:.0f} s")


if __name__ == "__main__":
    main()
