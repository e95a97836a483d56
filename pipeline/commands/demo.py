"""``marco demo``: the README's main job on the built-in synthetic data set."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from pipeline.commands.run import PRESET_NAMES

BASELINE_RESULTS = (
    Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "brightness_baseline.json"
)


def _brightness_baseline() -> float | None:
    """The brightness-only accuracy measured by benchmarks/brightness_baseline.py."""
    try:
        return float(json.loads(BASELINE_RESULTS.read_text())["best_accuracy"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _existing_summary(data_dir: Path) -> dict | None:
    summary = data_dir / "synth.json"
    if not summary.is_file():
        return None
    try:
        return json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError):
        return None


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("marco-demo"), show_default=True,
              help="Folder for the generated data and everything the run writes.")
@click.option("--images", type=click.IntRange(min=20), default=1500, show_default=True,
              help="Synthetic images to generate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data set.")
@click.option("--scale", type=click.FloatRange(min=0.05, max=1.0), default=1.0,
              show_default=True, help="Image size relative to each imager's real frame.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes for generation, checks and Beam (default: all cores).")
@click.option("--preset", "preset_name", type=click.Choice(PRESET_NAMES), default="demo",
              show_default=True, help="Pipeline preset to train and evaluate with.")
@click.option("--validate-only", is_flag=True,
              help="Generate and validate the data set, without running the pipeline.")
def demo(out: Path, images: int, seed: int, scale: float, workers: int | None,
         preset_name: str, validate_only: bool) -> None:
    """Generate the synthetic MARCO-like data set, validate it, and run the whole pipeline.

    The data set is reused when OUT already holds one made with the same settings, and
    the pipeline run (OUT/run) reuses cached results of unchanged steps. Ends with the
    report's headline: accuracy overall and per institution, and where the model was
    pushed. Exits non-zero when validation finds a problem.
    """
    from components.catalogue import load_catalogue
    from components.synth.writer import generate
    from components.validation import format_report, validate_data

    started = time.monotonic()
    catalogue = load_catalogue()
    data_dir = out / "data"
    wanted = {"images": images, "seed": seed, "scale": scale}
    summary = _existing_summary(data_dir)
    if summary and all(summary.get(k) == v for k, v in wanted.items()):
        click.echo(f"using the synthetic data set already in {data_dir}")
    else:
        click.echo(f"generating {images} synthetic images (seed {seed}) in {data_dir}")
        generate(data_dir, images, seed, catalogue=catalogue, scale=scale, workers=workers,
                 progress=True, overwrite=True)
    click.echo("validating against the source catalogue")
    report = validate_data(catalogue, data_dir, workers=workers, progress=True)
    click.echo(format_report(report))
    (out / "validation.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    click.echo(f"\nvalidation report: {out / 'validation.json'}")
    if not report.ok:
        raise SystemExit(1)
    if not validate_only:
        from pipeline.commands.run import quiet_environment, run_pipeline

        quiet_environment()
        click.echo("")
        run_pipeline(out / "run", preset_name, data=data_dir, workers=workers,
                     report_context={"baseline_accuracy": _brightness_baseline()})
    click.echo(f"demo took {time.monotonic() - started:.0f} s")
