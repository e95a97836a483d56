"""``marco report``: the paper's tables and figures from a run folder's latest evaluation.

The folder is a `marco run` folder (read through its ML Metadata store) or a Vertex AI
/ Kubeflow V2 pipeline root, local or gs:// (read from its folder layout).
"""

from __future__ import annotations

from pathlib import Path

import click

REPORT_DIR = "report"


def default_out_dir(run_dir: str | Path) -> Path:
    """RUN_DIR/report for a local folder; ./report for a gs:// pipeline root."""
    from components import filesystem

    if filesystem.is_remote(str(run_dir)):
        return Path(REPORT_DIR)
    return Path(run_dir) / REPORT_DIR


def write_run_report(run_dir: str | Path, out_dir: Path | None = None,
                     extra: dict | None = None, job_name: str | None = None
                     ) -> tuple[dict, Path]:
    """Writes the report of ``run_dir``'s latest evaluation; returns (summary, folder).

    ``run_dir`` is a `marco run` folder or a pipeline root (local or gs://);
    ``job_name`` picks one pipeline job's evaluation under a pipeline root.
    """
    from components.tools.report.render import write_report
    from components.tools.report.results import load_results
    from pipeline.runs import outcome as run_outcome

    outcome = run_outcome(run_dir, job_name)
    results = load_results(outcome.evaluation_uri)
    context = {"model": outcome.model_uri, "pushed_to": outcome.pushed_to,
               "not_pushed_reason": outcome.not_pushed_reason}
    context.update(extra or {})
    out_dir = out_dir or default_out_dir(run_dir)
    summary = write_report(results, out_dir, context)
    return summary, out_dir


def headline(summary: dict) -> list[str]:
    """The few lines a person reads first."""
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    spread = summary["institution_accuracy_spread"]
    lines = [f"accuracy {pct(summary['accuracy'])} on {summary['examples']} eval images"]
    if spread["std"] is not None:
        per = ", ".join(f"{code} {pct(facts['accuracy'])}"
                        for code, facts in summary["institutions"].items())
        lines.append(f"per institution: {per} (standard deviation {pct(spread['std'])})")
    baseline = summary["context"].get("baseline_accuracy")
    if baseline is not None:
        lines.append(f"brightness-only baseline: {pct(baseline)}")
    blessed = summary["blessed"]
    pushed = summary["context"].get("pushed_to")
    if blessed and pushed:
        lines.append(f"blessed; pushed to {pushed}")
    elif blessed:
        reason = summary["context"].get("not_pushed_reason")
        lines.append(f"blessed; not pushed ({reason})" if reason else "blessed; not pushed")
    else:
        lines.append("not blessed; nothing pushed")
        lines += [f"  {failure}" for failure in summary["threshold_failures"][:5]]
    return lines


@click.command("report")
@click.argument("run_dir")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report (default: RUN_DIR/report; ./report for gs://).")
@click.option("--job-name", default=None,
              help="Under a pipeline root: the pipeline job whose evaluation to report "
                   "(default: the newest finished one).")
def report(run_dir: str, out: Path | None, job_name: str | None) -> None:
    """Write Tables 4 and 5, ROC curves and per-institution accuracy for RUN_DIR.

    RUN_DIR is the --out folder of `marco run`, or the pipeline root of Vertex AI or
    Kubeflow Pipelines runs (local or gs://): there the newest finished Evaluator is
    found in <root>/<project number>/<job>/Evaluator_<id>/evaluation. The report
    covers that evaluation and is written as report.md, report.json and PNG figures.
    """
    from components import filesystem
    from components.tools.report.results import EvaluationError
    from pipeline.runs import RunFolderError

    if not filesystem.is_remote(run_dir) and not Path(run_dir).is_dir():
        raise click.BadParameter(f"{run_dir!r} is not a folder", param_hint="RUN_DIR")
    try:
        summary, out_dir = write_run_report(run_dir, out, job_name=job_name)
    except (RunFolderError, EvaluationError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in headline(summary):
        click.echo(line)
    click.echo(f"report: {out_dir / 'report.md'}")
