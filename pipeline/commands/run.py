"""``marco run``: the whole MARCO pipeline on this machine."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import click

PRESET_NAMES = ("tiny", "demo", "paper")


def quiet_environment() -> None:
    """Keeps library deprecation chatter out of the console, in Beam's workers too."""
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ignore = "ignore::FutureWarning,ignore::DeprecationWarning"
    os.environ["PYTHONWARNINGS"] = ignore
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def run_pipeline(
    out: Path,
    preset_name: str,
    *,
    data: Path | None = None,
    marco_shards: str | None = None,
    catalogue: Path | None = None,
    workers: int | None = None,
    train_steps: int | None = None,
    accuracy_floor: float | None = None,
    eval_percent: int = 10,
    report_context: dict | None = None,
) -> dict:
    """Runs the pipeline into ``out`` and writes its report; returns the report summary."""
    from pipeline.commands.report import headline, write_run_report
    from pipeline.config import PRESETS
    from pipeline.local import local_config, run_local

    preset = PRESETS[preset_name]
    changes = {}
    if train_steps is not None:
        changes["train_steps"] = train_steps
    if accuracy_floor is not None:
        changes["accuracy_floor"] = accuracy_floor
    preset = dataclasses.replace(preset, **changes)
    config = local_config(
        out, preset,
        data_dir=str(data.resolve()) if data else None,
        marco_shards=marco_shards,
        catalogue_dir=str(catalogue.resolve()) if catalogue else None,
        eval_percent=eval_percent,
        workers=workers,
    )
    click.echo(f"running the MARCO pipeline ({preset.name} preset) into {out}; "
               f"full log: {out / 'run.log'}")
    started = time.monotonic()
    run_local(config, out, echo=click.echo)
    summary, report_dir = write_run_report(
        out, extra={"preset": preset.name, **(report_context or {})}
    )
    click.echo(f"\nfinished in {time.monotonic() - started:.0f} s")
    for line in headline(summary):
        click.echo(line)
    click.echo(f"report: {report_dir / 'report.md'}")
    return summary


@click.command("run")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of institution data (one sub-folder each).")
@click.option("--marco-shards", default=None,
              help="Glob of published MARCO TFRecord shards to ingest (as well).")
@click.option("--preset", "preset_name", type=click.Choice(PRESET_NAMES), default="demo",
              show_default=True, help="tiny: tests; demo: a laptop; paper: GPU clusters.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("marco-run"), show_default=True,
              help="Run folder: ML Metadata, artifacts, pushed models, report. Run again "
                   "with the same folder to reuse cached results or resume.")
@click.option("--catalogue", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Institution YAML folder (default: schemas/sources).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Beam worker processes (default: all cores).")
@click.option("--train-steps", type=click.IntRange(min=0), default=None,
              help="Override the preset's number of training steps.")
@click.option("--accuracy-floor", type=click.FloatRange(0, 1), default=None,
              help="Override the preset's lowest accuracy that blesses a model.")
@click.option("--eval-percent", type=click.IntRange(1, 99), default=10, show_default=True,
              help="Share of image ids held out for evaluation.")
def run(data, marco_shards, preset_name, out, catalogue, workers, train_steps,
        accuracy_floor, eval_percent) -> None:
    """Run ingestion, validation, training, evaluation and push; write the report.

    Shows each component as it runs; ends with the accuracy, where the model was
    pushed and the report's path.
    """
    if data is None and not marco_shards:
        raise click.UsageError("give --data, --marco-shards or both")
    quiet_environment()
    from components.anomaly_gate import DataAnomalies

    try:
        run_pipeline(out, preset_name, data=data, marco_shards=marco_shards,
                     catalogue=catalogue, workers=workers, train_steps=train_steps,
                     accuracy_floor=accuracy_floor, eval_percent=eval_percent)
    except DataAnomalies as exc:
        raise click.ClickException(f"the data failed validation; nothing was trained.\n{exc}"
                                   ) from None
