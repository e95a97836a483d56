"""Time and peak memory of ``marco import-released``.

The released weights cannot be downloaded on every machine, so the released graph
(``../shared/released-marco/``: ``saved_model.pb`` and the variable index) is first
saved with random weights (:mod:`components.tools.released.randomised`; not timed);
the import reads and writes exactly what it would with the real weights. Each repeat
runs ``marco import-released`` in a fresh Python process, as a person runs it, and
records its wall time, CPU time and peak resident memory (the child's ``ru_maxrss``),
and the time of each step inside it (building the paper network, reading, checking
and loading the checkpoint, building the Transform graph, exporting).

Prints a table and writes JSON to ``benchmarks/results/released_import.json``.

Usage: ``python benchmarks/released_import.py [--repeats 1]`` (70 s to 3 minutes a
repeat on 2 cores, depending on their load). Other processes on the machine slow
every figure; the JSON records the load average.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
RELEASED_SOURCE = REPO.parent / "shared" / "released-marco"
RESULTS = REPO / "benchmarks" / "results" / "released_import.json"

# Runs one import in this (fresh) process and prints its step times as JSON.
WORKER = r"""
import json, sys, time
import components  # noqa: F401
from components.model import inception
from components.tools.released import importer
from components.trainer import export

steps = {}
def timed(name, function):
    def run(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            steps[name] = round(time.perf_counter() - started, 2)
    return run

inception.build_model = timed("build the paper network", inception.build_model)
importer.load_released_weights = timed("read, check and load the checkpoint",
                                       importer.load_released_weights)
importer.transform_output = timed("build the Transform graph", importer.transform_output)
export.export_model = timed("export the SavedModel", export.export_model)
started = time.perf_counter()
summary = importer.import_released(sys.argv[1], sys.argv[2])
total = time.perf_counter() - started
print(json.dumps({"steps": steps, "import_seconds": round(total, 2),
                  "tensors": summary.tensors, "values": summary.values,
                  "dropped": summary.dropped, "dropped_values": summary.dropped_values}))
"""


def _folder_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def one_import(model_dir: Path, scratch: Path, index: int) -> dict:
    serving = scratch / f"serving-{index}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WORKER, str(model_dir), str(serving)],
                            capture_output=True, text=True, check=False, cwd=REPO)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise click.ClickException(f"the import failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    (version,) = [p for p in serving.iterdir() if p.name.isdigit()]
    figures.update({
        "process_wall_seconds": round(wall, 1),
        "process_cpu_seconds": round((after.ru_utime + after.ru_stime)
                                     - (before.ru_utime + before.ru_stime), 1),
        # ru_maxrss is the largest of any child so far, in KiB on Linux.
        "peak_rss_mib": round(after.ru_maxrss / 1024, 0),
        "serving_folder_mib": round(_folder_mib(version), 1),
    })
    return figures


@click.command()
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=RESULTS, show_default=True)
def main(repeats: int, out: Path) -> None:
    """Measure marco import-released; write benchmarks/results/released_import.json."""
    import components  # noqa: F401
    from components.tools.released.randomised import save_with_random_weights

    if not (RELEASED_SOURCE / "saved_model.pb").is_file():
        raise click.ClickException(f"the released MARCO graph is not at {RELEASED_SOURCE}")
    with tempfile.TemporaryDirectory(prefix="marco-import-bench-") as scratch_name:
        scratch = Path(scratch_name)
        model_dir = Path(save_with_random_weights(str(RELEASED_SOURCE),
                                                  str(scratch / "savedmodel")))
        runs = []
        for index in range(repeats):
            runs.append(one_import(model_dir, scratch, index))
            click.echo(json.dumps(runs[-1]))
    best = min(runs, key=lambda r: r["process_wall_seconds"])
    result = {
        "benchmark": "marco import-released (released graph, random weights)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average": [round(v, 2) for v in os.getloadavg()]},
        "repeats": runs,
        "best": best,
    }
    click.echo(f"{'step':<40} {'seconds':>8}")
    for step, seconds in best["steps"].items():
        click.echo(f"{step:<40} {seconds:>8.1f}")
    click.echo(f"{'import (in process)':<40} {best['import_seconds']:>8.1f}")
    click.echo(f"{'whole command (new process)':<40} {best['process_wall_seconds']:>8.1f}")
    click.echo(f"peak resident memory {best['peak_rss_mib']:.0f} MiB; CPU "
               f"{best['process_cpu_seconds']:.0f} s; serving folder "
               f"{best['serving_folder_mib']:.1f} MiB; {best['tensors']} tensors, "
               f"{best['values']:,} values loaded")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
