"""``marco explain``: SmoothGrad heatmaps of a pushed model for drop images."""

from __future__ import annotations

from pathlib import Path

import click

from components.names import CLASS_NAMES
from components.tools.explain import (
    CSV_NAME,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CLASS,
    DEFAULT_NOISE,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    LOG_NAME,
    PREDICTED,
)

CLASS_CHOICES = (*CLASS_NAMES, PREDICTED)


@click.command("explain")
@click.argument("images", nargs=-1, required=True)
@click.option("--model", required=True,
              help="Serving folder the pipeline pushes to (its highest numbered version "
                   "is used), or one version / any SavedModel folder.")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the overlays, the arrays and heatmaps.csv (created; files "
                   "of the same names are replaced).")
@click.option("--class", "class_name", type=click.Choice(CLASS_CHOICES),
              default=DEFAULT_CLASS,
              show_default=True,
              help="The class whose score the heatmap explains; 'predicted' takes each "
                   "image's most probable class.")
@click.option("--locate", is_flag=True,
              help="Add the hottest region's centre (x, y) and radius, in the image "
                   "file's pixels, to heatmaps.csv, and circle it on the overlay.")
@click.option("--samples", type=click.IntRange(min=1),
              default=DEFAULT_SAMPLES, show_default=True,
              help="Noisy copies of each image whose gradients are averaged.")
@click.option("--noise", type=click.FloatRange(0, 1),
              default=DEFAULT_NOISE, show_default=True,
              help="Standard deviation of the noise, as a fraction of the image's value "
                   "range.")
@click.option("--batch-size", type=click.IntRange(min=1),
              default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Noisy copies per network call.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True,
              help="Seed of the noise: the same seed gives the same heatmaps.")
@click.option("--path-column", default=None,
              help="Column of CSV manifests holding the image paths [default: 'path', "
                   "'filename', 'image'... if in the header, else the first column].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def explain(images: tuple[str, ...], model: str, out_dir: Path, class_name: str, locate: bool,
            samples: int, noise: float, batch_size: int, seed: int, path_column: str | None,
            quiet: bool) -> None:
    """Write SmoothGrad heatmaps of a MARCO model's class score for drop images.

    IMAGES are folders (searched recursively), quoted globs, manifests or image
    files, as for marco score. For each image, OUT gets <stem>.heatmap.png (the heat
    over the image the network sees, in grey: the centre square, at the network's
    size) and <stem>.heatmap.npy (the heatmap, float32), under the image's folders
    below the folder common to all images. heatmaps.csv lists every image, with the
    reason for any that could not be explained. Everything else the run logs goes to
    OUT/explain.log.

    \b
    Examples:
      marco explain hits/ --model marco-run/serving --out heatmaps/ --locate
      marco explain PLATE7_B12.jpg --model marco-run/serving --out heat/ --class predicted
    """
    from pipeline.local import console_and_log

    log_path = out_dir / LOG_NAME
    out_existed, log_existed = out_dir.exists(), log_path.exists()
    try:
        with console_and_log(log_path) as console:
            console.echo(f"explaining with {model}; full log: {log_path}")
            _explain(console.echo, images, model, out_dir, class_name, locate, samples, noise,
                     batch_size, seed, path_column, quiet)
    except click.ClickException:
        # Stopped before any heatmap (no model, no such input): the message says why,
        # and no log (nor a folder made for it) is left behind.
        if not log_existed and not (out_dir / CSV_NAME).exists():
            log_path.unlink(missing_ok=True)
            if not out_existed and not any(out_dir.iterdir()):
                out_dir.rmdir()
        raise


def _explain(echo, images: tuple[str, ...], model: str, out_dir: Path, class_name: str,
             locate: bool, samples: int, noise: float, batch_size: int, seed: int,
             path_column: str | None, quiet: bool) -> None:
    from components.tools.explain.run import ExplainOptions, explain_images
    from components.tools.explain.smoothgrad import SmoothGradSettings
    from components.tools.scoring.inputs import InputError
    from components.tools.scoring.model import ModelNotFound

    try:
        options = ExplainOptions(
            class_name=class_name,
            settings=SmoothGradSettings(samples=samples, noise=noise, batch_size=batch_size,
                                        seed=seed),
            locate=locate,
            path_column=path_column,
            progress=not quiet,
        )
        summary = explain_images(list(images), model, out_dir, options)
    except (InputError, ModelNotFound, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    version = f" (version {summary.model_version})" if summary.model_version is not None else ""
    per_image = summary.seconds / summary.explained if summary.explained else 0.0
    echo(f"explained {summary.explained} of {len(summary.rows)} images in "
         f"{summary.seconds:.0f} s ({per_image:.1f} s an image; model loaded in "
         f"{summary.load_seconds:.0f} s) with {summary.model_dir}{version}")
    echo(f"  class {class_name}, {samples} samples, noise {noise:g}, seed {seed}, "
         f"{summary.input_size}x{summary.input_size} heatmaps")
    if summary.errors:
        echo(f"  not explained: {summary.errors} (rows at the end of {summary.csv_path}, "
             "with the reason)")
    echo(f"results: {summary.csv_path}; overlays <stem>.heatmap.png and arrays "
         f"<stem>.heatmap.npy in {out_dir}")
    if summary.explained == 0:
        raise click.ClickException("no image could be explained; see the error column")
