"""``marco report``: the paper's tables and figures from a run folder's latest evaluation."""

from __future__ import annotations

from pathlib import Path

import click

REPORT_DIR = "report"


def write_run_report(run_dir: Path, out_dir: Path | None = None, extra: dict | None = None
                     ) -> tuple[dict, Path]:
    """Writes the report of ``run_dir``'s latest evaluation; returns (summary, folder)."""
    from components.report.render import write_report
    from components.report.results import load_results
    from pipeline.runs import latest_outcome

    outcome = latest_outcome(run_dir)
    results = load_results(outcome.evaluation_uri)
    context = {"model": outcome.model_uri, "pushed_to": outcome.pushed_to}
    context.update(extra or {})
    out_dir = out_dir or run_dir / REPORT_DIR
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
        lines.append("blessed; not pushed")
    else:
        lines.append("not blessed; nothing pushed")
        lines += [f"  {failure}" for failure in summary["threshold_failures"][:5]]
    return lines


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report (default: RUN_DIR/report).")
def report(run_dir: Path, out: Path | None) -> None:
    """Write Tables 4 and 5, ROC curves and per-institution accuracy for RUN_DIR.

    RUN_DIR is the --out folder of `marco run`; the report covers its latest
    evaluation and is written as report.md, report.json and PNG figures.
    """
    from components.report.results import EvaluationError
    from pipeline.runs import RunFolderError

    try:
        summary, out_dir = write_run_report(run_dir, out)
    except (RunFolderError, EvaluationError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in headline(summary):
        click.echo(line)
    click.echo(f"report: {out_dir / 'report.md'}")
