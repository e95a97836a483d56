"""``marco run``: the whole MARCO pipeline on this machine."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import click

PRESET_NAMES = ("tiny", "demo", "paper")
# marco run also fine-tunes an earlier model (--init-from); marco demo does not.
RUN_PRESET_NAMES = (*PRESET_NAMES, "finetune")

_LOG = logging.getLogger(__name__)


def failure_message(exc: BaseException, log_path: Path,
                    what: str = "the pipeline stopped") -> str:
    """One line for an exception that stopped a run, and where its traceback is."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    # Beam puts a worker's whole traceback in its exception's text: its last line
    # names the error.
    detail = (lines[-1] if lines[0].startswith("Traceback") else lines[0]) if lines else ""
    name = type(exc).__name__
    return (f"{what}: {name}: {detail.strip()}" if detail else f"{what}: {name}"
            ) + f"\nfull traceback: {log_path}"


def budget_stop_message(exc) -> str:
    """A few lines for a run the quarantine budget stopped (no traceback)."""
    from components.ingestion.report import per_reason_line

    summary = exc.summary
    total = summary.examples + summary.quarantined
    lines = [
        f"the run stopped at ingestion; nothing was trained: {summary.quarantined} of "
        f"{total} inputs ({summary.quarantined_fraction:.1%}) were quarantined, above "
        f"the quarantine budget of {exc.budget:.1%}",
        f"  per reason: {per_reason_line(summary)}",
    ]
    if exc.report_path:
        lines.append(f"full quarantine report (every record, its reason, file and line): "
                     f"{exc.report_path}")
    # The smallest budget, in hundredths, that these inputs would pass.
    needed = min(1.0, math.ceil(summary.quarantined_fraction * 100) / 100)
    lines.append(f"fix or remove the refused inputs, or raise the budget: rerun with "
                 f"--quarantine-budget {needed:g} (a fraction of the inputs, 0-1)")
    return "\n".join(lines)


def anomalies_stop_message(exc) -> str:
    """A few lines for a run the anomaly gate stopped (no traceback)."""
    lines = ["the data failed validation; nothing was trained."]
    problems = exc.problems or [str(exc)]
    lines += [f"  {line}" for line in problems]
    if exc.report_path:
        lines.append(f"full anomalies report: {exc.report_path}")
    hint = str(exc).strip().splitlines()[-1]
    if hint not in lines[-1]:
        lines.append(hint)
    return "\n".join(lines)


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
    quarantine_budget: float | None = None,
    init_from: str | None = None,
    report_context: dict | None = None,
    summary_lines: Callable[[dict], list[str]] | None = None,
) -> dict:
    """Runs the pipeline into ``out`` and writes its report; returns the report summary.

    The console gets where the log is, a line per component, the Trainer's condensed
    epochs and ``summary_lines(summary)`` (default: the report's headline); everything
    else goes to ``out/run.log``.

    ``init_from`` (a serving folder, version folder or SavedModel of the same preset)
    is the model training starts from and, while the run has pushed nothing, the
    baseline a new model must beat.

    Raises:
        click.ClickException: when the data fail validation or a component fails (the
            traceback is in run.log).
    """
    from pipeline.local import LOG_FILE, console_and_log

    log_path = out / LOG_FILE
    with console_and_log(log_path) as console:
        console.echo(f"running the MARCO pipeline ({preset_name} preset) into {out}; "
                     f"full log: {log_path}")
        started = time.monotonic()
        from components.anomaly_gate import DataAnomalies
        from components.ingestion.report import QuarantineBudgetExceeded
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
        if init_from:
            console.echo(f"starting from the model in {init_from}")
        config = local_config(
            out, preset,
            data_dir=str(data.resolve()) if data else None,
            marco_shards=marco_shards,
            catalogue_dir=str(catalogue.resolve()) if catalogue else None,
            eval_percent=eval_percent,
            workers=workers,
            **({"init_from": init_from} if init_from else {}),
            **({} if quarantine_budget is None else {"quarantine_budget": quarantine_budget}),
        )
        try:
            run_local(config, out, echo=console.echo)  # logs what stopped it
        except DataAnomalies as exc:
            raise click.ClickException(anomalies_stop_message(exc)) from None
        except QuarantineBudgetExceeded as exc:
            raise click.ClickException(budget_stop_message(exc)) from None
        except Exception as exc:
            raise click.ClickException(failure_message(exc, log_path)) from None
        try:
            summary, report_dir = write_run_report(
                out, extra={"preset": preset.name, **(report_context or {})}
            )
        except Exception as exc:
            _LOG.exception("the report could not be written")
            what = "the run ended but its report could not be written"
            raise click.ClickException(failure_message(exc, log_path, what)) from None
        console.echo(f"\nfinished in {time.monotonic() - started:.0f} s")
        for line in (summary_lines or headline)(summary):
            console.echo(line)
        console.echo(f"report: {report_dir / 'report.md'}")
    return summary


@click.command("run")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of institution data (one sub-folder each).")
@click.option("--marco-shards", default=None,
              help="Glob of published MARCO TFRecord shards to ingest (as well).")
@click.option("--preset", "preset_name", type=click.Choice(RUN_PRESET_NAMES), default="demo",
              show_default=True, help="tiny: tests; demo: a laptop; paper: GPU clusters; finetune: "
                   "an earlier paper model (--init-from) trained on a lab's images on a CPU.")
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
@click.option("--quarantine-budget", type=click.FloatRange(0, 1), default=None,
              help="Largest share of inputs that may be quarantined before the run stops "
                   "(a fraction; default 0.01).")
@click.option("--init-from", "init_from", default=None, metavar="SERVING_DIR",
              help="Start training from this model of the same preset (a serving folder, "
                   "whose newest version is taken, e.g. marco import-released's --out, or "
                   "a SavedModel folder); it is also the baseline a new model must beat "
                   "until the run has pushed one. Needed by --preset finetune.")
def run(data, marco_shards, preset_name, out, catalogue, workers, train_steps,
        accuracy_floor, eval_percent, quarantine_budget, init_from) -> None:
    """Run ingestion, validation, training, evaluation and push; write the report.

    Shows where the full log is (OUT/run.log), each component as it runs; ends with
    the accuracy, where the model was pushed and the report's path. A run stopped by
    the quarantine budget or by anomalies says why, and where its full report is
    (OUT/stopped-runs/).

    With --catalogue DIR the run reads that catalogue, and the schema it validates
    against is derived from it, so DIR may add institutions the project does not know.
    """
    if data is None and not marco_shards:
        raise click.UsageError("give --data, --marco-shards or both")
    if init_from:
        from components import filesystem
        from components.baseline.served import init_model

        if not filesystem.is_remote(init_from):
            init_from = str(Path(init_from).resolve())
        try:
            init_model(init_from)
        except FileNotFoundError as exc:
            raise click.BadParameter(str(exc), param_hint="--init-from") from None
    else:
        from pipeline.config import PRESETS

        if PRESETS[preset_name].training.trainable_layers:
            raise click.UsageError(
                f"--preset {preset_name} fine-tunes an earlier model: give --init-from "
                "SERVING_DIR (e.g. the folder marco import-released wrote)")
    run_pipeline(out, preset_name, data=data, marco_shards=marco_shards,
                 catalogue=catalogue, workers=workers, train_steps=train_steps,
                 accuracy_floor=accuracy_floor, eval_percent=eval_percent,
                 quarantine_budget=quarantine_budget, init_from=init_from)
