"""``marco demo``: the README's main job on the built-in synthetic data set."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pipeline.commands.run import PRESET_NAMES

if TYPE_CHECKING:
    from components.tools.brightness_baseline import BrightnessBaseline

EVAL_PERCENT = 10  # share of image ids in the eval split, for the pipeline and the baseline


def _existing_summary(data_dir: Path) -> dict | None:
    summary = data_dir / "synth.json"
    if not summary.is_file():
        return None
    try:
        return json.loads(summary.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def baseline_line(baseline: BrightnessBaseline) -> str:
    """What the brightness-only baseline scored, on which images, at what cost."""
    return (f"brightness-only baseline {_pct(baseline.accuracy)} on the same "
            f"{baseline.eval_images} eval images (trained on the same "
            f"{baseline.train_images} training images; {baseline.cpu_seconds:.1f} s of CPU)")


def demo_summary(summary: dict, baseline: BrightnessBaseline | None) -> list[str]:
    """The report's headline with the brightness-only baseline beside the accuracy.

    The headline's first line is the model's accuracy; the baseline's line follows it.
    """
    from pipeline.commands.report import headline

    context = {k: v for k, v in summary["context"].items() if k != "baseline_accuracy"}
    lines = headline({**summary, "context": context})
    if baseline is not None:
        lines.insert(1, baseline_line(baseline))
    return lines


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
    the pipeline run (OUT/run) reuses cached results of unchanged steps. Before the
    run, a brightness-only classifier is measured on the same training and eval
    images. Ends with the report's headline: accuracy overall (beside the
    brightness-only baseline's) and per institution, and where the model was pushed.
    Everything but these lines goes to OUT/run/run.log. Exits non-zero when
    validation finds a problem.
    """
    from contextlib import nullcontext

    from pipeline.local import LOG_FILE, Console, console_and_log

    started = time.monotonic()
    run_dir = out / "run"
    log_path = run_dir / LOG_FILE
    routing = nullcontext(None) if validate_only else console_and_log(log_path)
    with routing as console:
        echo = console.echo if isinstance(console, Console) else click.echo
        if not validate_only:
            echo(f"marco demo into {out}; full log: {log_path}")
        _prepare_data(out, images, seed, scale, workers, echo)
        if not validate_only:
            from components.tools.brightness_baseline import measure
            from pipeline.commands.run import run_pipeline

            echo("measuring the brightness-only baseline on the pipeline's training and "
                 "eval images")
            baseline = measure(out / "data", eval_percent=EVAL_PERCENT)
            echo(f"  {baseline_line(baseline)}")
            echo("")
            run_pipeline(run_dir, preset_name, data=out / "data", workers=workers,
                         eval_percent=EVAL_PERCENT,
                         report_context={"baseline_accuracy": baseline.accuracy},
                         summary_lines=lambda summary: demo_summary(summary, baseline))
        echo(f"demo took {time.monotonic() - started:.0f} s")


def _prepare_data(out: Path, images: int, seed: int, scale: float, workers: int | None,
                  echo: Callable[[str], None]) -> None:
    """Generates (or reuses) the data set in OUT/data and validates it.

    Raises:
        SystemExit: with status 1 when validation finds a problem.
    """
    from components.catalogue import load_catalogue
    from components.tools.synth.writer import generate
    from components.tools.validation import format_report, validate_data

    catalogue = load_catalogue()
    data_dir = out / "data"
    wanted = {"images": images, "seed": seed, "scale": scale}
    summary = _existing_summary(data_dir)
    if summary and all(summary.get(k) == v for k, v in wanted.items()):
        echo(f"using the synthetic data set already in {data_dir}")
    else:
        echo(f"generating {images} synthetic images (seed {seed}) in {data_dir}")
        generate(data_dir, images, seed, catalogue=catalogue, scale=scale, workers=workers,
                 progress=True, overwrite=True)
    echo("validating against the source catalogue")
    report = validate_data(catalogue, data_dir, workers=workers, progress=True)
    echo(format_report(report))
    (out / "validation.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    echo(f"\nvalidation report: {out / 'validation.json'}")
    if not report.ok:
        raise SystemExit(1)
