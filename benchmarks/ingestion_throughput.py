"""Ingestion throughput and peak memory: the Beam stages against a plain single-process loop.

Makes synthetic GSK-size images once (1280x960 JPEG from the synthetic generator,
cached between runs), then measures, each in a fresh subprocess:

* ``plain``: one process reads the manifest, reads and fully checks every image,
  builds the same tf.Examples and writes the same gzipped TFRecords;
* ``beam``: ImageExampleGen's Beam stages on the DirectRunner in multi-processing
  mode (``--direct_num_workers``, default 2), written in the artifact layout;

at ``--images`` (default 2,000) for throughput and at ``--images`` and ``--large``
(default 8,000) for memory. Peak memory is reported two ways: the largest single
process (``ru_maxrss`` of the measuring process and of its waited-for descendants,
which include the Beam workers) and the sampled peak of the whole process tree's
summed resident memory. Goals: Beam at least 1.6x the plain loop, and peak memory at
``--large`` within 20% of that at ``--images``.

Run: ``.venv/bin/python benchmarks/ingestion_throughput.py`` (a few minutes).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click

import components  # noqa: F401  (process set-up before TensorFlow)

RESULTS = Path(__file__).resolve().parent / "results" / "ingestion.json"
SPEEDUP_GOAL = 1.6
MEMORY_GROWTH_LIMIT = 1.2
DEFAULT_DATA = Path(tempfile.gettempdir()) / "marco-ingestion-benchmark"
BEAM_MODES = {"beam": "multi_processing", "beam_threads": "multi_threading"}


def _unique_images(base: Path, count: int, seed: int) -> tuple[Path, list[tuple[str, str]]]:
    """``count`` distinct full-size GSK images from the generator, made once."""
    from components.catalogue import Catalogue, load_catalogue
    from components.tools.synth.writer import generate

    done = base / "synth.json"
    if not (done.is_file() and json.loads(done.read_text())["images"] == count):
        gsk = load_catalogue().get("GSK")
        click.echo(f"generating {count} GSK-size images in {base} (once) ...")
        generate(base, count, seed, catalogue=Catalogue((gsk,)), scale=1.0, overwrite=True,
                 progress=True)
    with (base / "GSK" / "labels.csv").open(newline="") as handle:
        rows = [(r["filename"], r["label"]) for r in csv.DictReader(handle)]
    return base / "GSK" / "images", rows


def prepare(data: Path, sizes: list[int], unique: int, seed: int) -> dict[int, Path]:
    """One data folder per size, in the GSK layout, sharing one image folder.

    Beyond ``unique`` images, files are hard links under new names: new image ids,
    the same decoding and writing work, without rendering thousands more images.
    """
    images, rows = _unique_images(data / "unique", unique, seed)
    folders = {}
    for size in sizes:
        folder = data / f"set-{size}"
        manifest = folder / "GSK" / "labels.csv"
        if not manifest.is_file():
            (folder / "GSK").mkdir(parents=True, exist_ok=True)
            link = folder / "GSK" / "images"
            if not link.exists():
                link.symlink_to(images, target_is_directory=True)
            with manifest.open("w", newline="") as handle:
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(["filename", "label"])
                for i in range(size):
                    name, label = rows[i % len(rows)]
                    if i >= len(rows):
                        stem, ext = name.rsplit(".", 1)
                        copy = f"{stem}_copy{i // len(rows)}.{ext}"
                        if not (images / copy).exists():
                            os.link(images / name, images / copy)
                        name = copy
                    writer.writerow([name, label])
        folders[size] = folder
    return folders


class TreeMemory:
    """Samples the summed resident memory of this process and all its descendants."""

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for proc in [self._process, *self._process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # exited since it was listed
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self._interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def plain_loop(data_dir: Path, out: Path) -> int:
    """Read, check and write in one process: the baseline."""
    import tensorflow as tf

    from components import imagecheck
    from components.catalogue import load_catalogue
    from components.ingestion.beam_stages import build_example, split_for
    from components.readers import Record, read_source

    gsk = load_catalogue().get("GSK")
    out.mkdir(parents=True, exist_ok=True)
    writers = {
        split: tf.io.TFRecordWriter(str(out / f"{split}.tfrecord.gz"), options="GZIP")
        for split in ("train", "eval")
    }
    count = 0
    for record in read_source(gsk, data_dir):
        if not isinstance(record, Record):
            continue
        try:
            data, info = imagecheck.read_and_inspect(record.path)
        except imagecheck.BadImage:
            continue
        example = build_example(
            data, info, institution=record.institution, native_label=record.native_label,
            image_id=record.image_id, source_path=record.path, plate=record.plate,
            well=record.well, imaged_at=record.imaged_at,
        )
        writers[split_for(record.image_id, 10)].write(example)
        count += 1
    for writer in writers.values():
        writer.close()
    return count


def beam_run(data_dir: Path, out: Path, workers: int, mode: str = "multi_processing") -> int:
    """The ingestion Beam stages on the DirectRunner (``mode``: its direct_running_mode)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components.catalogue import load_catalogue
    from components.ingestion import beam_stages, report

    catalogue = load_catalogue()
    config = beam_stages.IngestionConfig(catalogue, str(data_dir))
    units = beam_stages.list_work_units(catalogue, str(data_dir), institutions=["GSK"])
    options = PipelineOptions(
        [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
    )
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | beam_stages.IngestImages(config, units)
            | beam_stages.WriteIngestion(str(out))
        )
    return report.read_summary(str(out)).examples


def run_measurement(mode: str, data_dir: Path, out: Path, workers: int) -> dict:
    """Run one measurement in this process and report time and memory."""
    import apache_beam  # noqa: F401  (imports are not part of the timing)
    import tensorflow  # noqa: F401

    with TreeMemory() as tree:
        start = time.perf_counter()
        if mode == "plain":
            images = plain_loop(data_dir, out)
        else:
            images = beam_run(data_dir, out, workers, BEAM_MODES[mode])
        seconds = time.perf_counter() - start
    largest = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    return {
        "mode": mode,
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 1),
        "peak_process_mb": round(largest / 1024, 1),
        "peak_tree_mb": round(tree.peak / 2**20, 1),
    }


def _check_images(paths: list[str]) -> float:
    """Seconds to read, fully decode and gzip ``paths``: the per-image work, no framework."""
    import zlib

    from components.imagecheck import read_and_inspect

    start = time.perf_counter()
    for path in paths:
        data, _ = read_and_inspect(path)
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        compressor.compress(data)
        compressor.flush()
    return time.perf_counter() - start


def parallel_capacity(images: Path, count: int = 300) -> float:
    """How much faster two processes do the per-image work than one, on this machine now.

    2.0 is two free cores; the machine may be shared, so this puts the Beam figures in
    context (a speed-up cannot exceed it).
    """
    import multiprocessing

    paths = sorted(str(p) for p in images.glob("*.jpg"))[:count]
    serial = _check_images(paths)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_check_images, [paths[:4], paths[4:8]])  # start-up, not measured
        start = time.perf_counter()
        pool.map(_check_images, [paths[0::2], paths[1::2]])
        parallel = time.perf_counter() - start
    return serial / parallel


def _environment(cache: Path) -> dict[str, str]:
    """Child environment with a private bytecode cache.

    Where PYTHONDONTWRITEBYTECODE is set and the environment ships without ``.pyc``
    files, every process compiles Beam (and TensorFlow) from source: about 10 s per
    DirectRunner worker. An installed environment normally has the bytecode, so the
    measurement uses a warmed cache outside the environment (PYTHONPYCACHEPREFIX).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def _subprocess(mode: str, data_dir: Path, out: Path, workers: int, cache: Path) -> dict:
    command = [sys.executable, __file__, "--measure", mode, "--data", str(data_dir),
               "--out", str(out), "--workers", str(workers)]
    result = subprocess.run(command, capture_output=True, text=True, env=_environment(cache))
    if result.returncode != 0:
        raise click.ClickException(f"{mode} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@click.command()
@click.option("--images", default=2000, show_default=True, help="Throughput set size.")
@click.option("--large", default=8000, show_default=True, help="Second size, for memory.")
@click.option("--unique", default=2000, show_default=True, help="Distinct images rendered.")
@click.option("--workers", default=2, show_default=True, help="Beam DirectRunner workers.")
@click.option("--seed", default=11, show_default=True)
@click.option("--data", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=True,
              help="Cache of generated images; measurement mode: the data folder.")
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS, show_default=True,
              help="Results JSON; measurement mode: the output folder.")
@click.option("--measure", type=click.Choice(["plain", *BEAM_MODES]), default=None, hidden=True)
def main(images: int, large: int, unique: int, workers: int, seed: int, data: Path, out: Path,
         measure: str | None) -> None:
    """Measure ingestion throughput and peak memory; write benchmarks/results/ingestion.json."""
    if measure:
        click.echo(json.dumps(run_measurement(measure, data, out, workers)))
        return
    warm_up = 40
    folders = prepare(data, [warm_up, images, large], min(unique, images), seed)
    cache = data / "pycache"
    with tempfile.TemporaryDirectory() as scratch:
        # Fills the bytecode cache for the runner and its workers; not reported.
        _subprocess("plain", folders[warm_up], Path(scratch, "warm-plain"), workers, cache)
        _subprocess("beam", folders[warm_up], Path(scratch, "warm-beam"), workers, cache)
        runs = {
            "plain": _subprocess("plain", folders[images], Path(scratch, "plain"), workers, cache),
            "beam": _subprocess("beam", folders[images], Path(scratch, "beam"), workers, cache),
            "beam_large": _subprocess(
                "beam", folders[large], Path(scratch, "large"), workers, cache
            ),
            "beam_threads": _subprocess(
                "beam_threads", folders[images], Path(scratch, "threads"), workers, cache
            ),
        }
        capacity = parallel_capacity(data / "unique" / "GSK" / "images")
    for name, run in runs.items():
        click.echo(f"{name:>12}: {run}")
    click.echo(f"two processes do the bare per-image work {capacity:.2f}x faster than one")
    speedup = runs["beam"]["images_per_s"] / runs["plain"]["images_per_s"]
    # The DirectRunner starts fresh worker interpreters per run (importing Beam with its
    # GCP clients); the 2,000 -> 8,000 difference shows the rate once they are up.
    extra = runs["beam_large"]["images"] - runs["beam"]["images"]
    marginal = extra / (runs["beam_large"]["seconds"] - runs["beam"]["seconds"])
    fixed = runs["beam"]["seconds"] - runs["beam"]["images"] / marginal
    growth_process = runs["beam_large"]["peak_process_mb"] / runs["beam"]["peak_process_mb"]
    growth_tree = runs["beam_large"]["peak_tree_mb"] / runs["beam"]["peak_tree_mb"]
    result = {
        "benchmark": "ingestion_throughput",
        "image_size": "1280x960 JPEG (synthetic GSK)",
        "beam_runner": f"DirectRunner multi_processing, {workers} workers",
        "cpus": os.cpu_count(),
        "parallel_capacity_2_processes": round(capacity, 2),
        "runs": runs,
        "speedup": round(speedup, 2),
        "speedup_goal": SPEEDUP_GOAL,
        "beam_marginal_images_per_s": round(marginal, 1),
        "beam_marginal_speedup": round(marginal / runs["plain"]["images_per_s"], 2),
        "beam_fixed_overhead_s": round(fixed, 1),
        "threads_speedup": round(
            runs["beam_threads"]["images_per_s"] / runs["plain"]["images_per_s"], 2
        ),
        "memory_growth_process": round(growth_process, 3),
        "memory_growth_tree": round(growth_tree, 3),
        "memory_growth_limit": MEMORY_GROWTH_LIMIT,
        "meets_speedup_goal": speedup >= SPEEDUP_GOAL,
        "meets_memory_goal": max(growth_process, growth_tree) <= MEMORY_GROWTH_LIMIT,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    marginal_speedup = marginal / runs["plain"]["images_per_s"]
    click.echo(
        f"speedup {speedup:.2f}x (goal {SPEEDUP_GOAL}x; {marginal_speedup:.2f}x "
        f"once workers are up, {fixed:.0f} s fixed start-up); peak memory {large} vs {images} "
        f"images: x{growth_process:.3f} largest process, x{growth_tree:.3f} process tree "
        f"(limit x{MEMORY_GROWTH_LIMIT}); written to {out}"
    )


if __name__ == "__main__":
    main()
