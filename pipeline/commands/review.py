"""``marco review``: the labelled images a run's pushed model disagrees with most, on a
page where an expert relabels them and downloads the decisions as overrides files."""

from __future__ import annotations

from pathlib import Path

import click

from components.tools.review import DEFAULT_FRACTION


@click.command("review")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for the review page (created).")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_FRACTION,
              show_default=True,
              help="Share of the labelled images to review: those whose stored label the "
                   "model finds least likely (highest cross-entropy), over every split.")
@click.option("--model", default=None,
              help="Serving folder or SavedModel to judge with [default: RUN_DIR/serving, "
                   "the run's pushed models, newest version].")
@click.option("--examples", default=None,
              help="Ingested Examples folder to review [default: the run's newest "
                   "ImageExampleGen output].")
@click.option("--catalogue", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="Catalogue folder giving each native label's class [default: the "
                   "project's schemas/sources].")
@click.option("--heatmaps", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The heatmaps CSV file marco explain wrote: overlays of the reviewed "
                   "images (matched by image path) are shown over them.")
@click.option("--explain", "make_heatmaps", is_flag=True,
              help="Make a SmoothGrad heatmap of each reviewed image's predicted class "
                   "(seconds per image on CPU).")
@click.option("--title", default="MARCO label review", show_default=True,
              help="The page's title.")
def review(run_dir: Path, out_dir: Path, fraction: float, model: str | None,
           examples: str | None, catalogue: Path | None, heatmaps: str | None,
           make_heatmaps: bool, title: str) -> None:
    """Write a review page of the images where model and label disagree most.

    RUN_DIR is the --out folder of `marco run`. Every labelled example it ingested
    (all splits) is scored by the pushed model; the FRACTION with the highest
    cross-entropy on the stored label (the catalogue's class, or an earlier override's)
    are shown one at a time with the stored label, the model's probabilities and, with
    --heatmaps or --explain, a heatmap.

    On the page the expert presses 1-4 for a class, 0 or d for "dispute / unsure", n
    to write a note, and e (or the button) to download the decisions: one overrides
    file per institution, <CODE>.csv, for the catalogue's overrides folder
    (schemas/sources/overrides/). The next `marco run` trains on the new labels.

    \b
    Examples:
      marco review runs/demo --out review/
      marco review runs/demo --fraction 0.02 --explain --out review/
    """
    from components.catalogue import CatalogueError, load_catalogue
    from components.tools.review.examples import ReviewInputError, find_examples
    from components.tools.review.page import ReviewOptions, build_review
    from components.tools.scoring.model import ModelNotFound
    from components.tools.viewer import ResultsError
    from pipeline.local import SERVING_DIR

    try:
        options = ReviewOptions(fraction=fraction, heatmaps=heatmaps, explain=make_heatmaps,
                                title=title)
        summary = build_review(
            examples or find_examples(run_dir),
            model or str(run_dir / SERVING_DIR),
            load_catalogue(catalogue),
            str(out_dir),
            options,
        )
    except (ReviewInputError, ModelNotFound, CatalogueError, ResultsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    skipped = ", ".join(f"{count} {what}" for what, count in summary.skipped.items() if count)
    click.echo(f"review: {summary.selected} of {summary.considered} labelled images "
               f"(cross-entropy >= {summary.min_cross_entropy:.2f})"
               + (f"; left out: {skipped}" if skipped else "")
               + (f"; {summary.heatmaps} with a heatmap" if summary.heatmaps else "")
               + f"; {summary.bytes / 2**20:.1f} MiB in {summary.seconds:.1f} s")
    click.echo(f"open {summary.index}")
