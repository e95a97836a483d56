"""``marco import-released``: the released MARCO model's weights as a serving folder of ours."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

DROPPED_MEANING = {
    "Inception/AuxLogits/*": "the auxiliary head, used only in training",
    "global_step": "the training step counter",
}


def summary_lines(summary) -> list[str]:
    """What the command prints after a successful import."""
    dropped = ", ".join(
        f"{group} ({count} tensor{'s' if count != 1 else ''}, "
        f"{DROPPED_MEANING.get(group, 'not part of the network')})"
        for group, count in sorted(summary.dropped.items())
    )
    return [
        f"loaded {summary.tensors} tensors ({summary.values:,} values) of {summary.source} "
        "into the paper network, by their slim names",
        f"  dropped: {dropped or 'nothing'}; {summary.dropped_values:,} values",
        f"  classes: {', '.join(summary.class_names)} (logits in that order, mapped by name)",
        f"  Transform graph: {summary.transform}",
        f"serving folder: {summary.version_dir} (version {summary.version}; signatures "
        "serving_default, probabilities, serving_examples, transform_features) in "
        f"{summary.seconds:.0f} s",
        f"score with it: marco score PLATES --model {summary.serving_dir}",
    ]


@click.command("import-released")
@click.argument("saved_model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "serving_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Serving folder to add the imported model to, as a new numbered version "
                   "(created if missing).")
@click.option("--transform-graph", "transform_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A Transform output (a run's Transform/transform_graph/<id> folder) for "
                   "the tf.Example signatures [default: built from the project's schema and "
                   "catalogue].")
def import_released(saved_model_dir: Path, serving_dir: Path, transform_dir: Path | None) -> None:
    """Import the released MARCO model's weights into the paper network.

    SAVED_MODEL_DIR is the model the MARCO initiative released (savedmodel.zip,
    unpacked: saved_model.pb and variables/). Its checkpoint is loaded tensor by tensor,
    by slim name, into this project's `paper` network; the auxiliary head and
    global_step are dropped. The result is written as a new version of the serving
    folder --out, with this project's signatures, so that `marco score`, `marco
    export-tflite`, the pipeline's Evaluator and TF Serving take it as they take a
    trained model. It serves with the released graph's own preprocessing, so its
    probabilities are the released model's.

    A checkpoint that does not fit the network is refused, naming the first missing or
    mis-shaped tensor, and nothing is written.

    \b
    Example:
      unzip savedmodel.zip -d marco-released
      marco import-released marco-released/savedmodel --out marco-serving
      marco score plates/ --model marco-serving --out results.csv
    """
    from pipeline.local import console_and_log

    # The log goes to the temporary folder: a refused import leaves nothing beside --out.
    log_path = Path(tempfile.gettempdir()) / f"marco-import-released-{os.getpid()}.log"
    with console_and_log(log_path) as console:
        console.echo(f"importing {saved_model_dir}; full log: {log_path}")
        from components.tools.released.graph import NotReleasedModel
        from components.tools.released.importer import CheckpointMismatch
        from components.tools.released.importer import import_released as run_import

        try:
            summary = run_import(str(saved_model_dir), str(serving_dir),
                                 transform_dir=str(transform_dir) if transform_dir else None)
        except (NotReleasedModel, CheckpointMismatch, ValueError) as exc:
            raise click.ClickException(f"{exc}; nothing was written") from None
        for line in summary_lines(summary):
            console.echo(line)
