"""``marco score``: score drop images with a pushed model; ``marco export-tflite``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from components.tools.scoring.inputs import DEFAULT_PLATE_WELL_PATTERN, IMAGE_SUFFIXES

if TYPE_CHECKING:
    from pipeline.local import Console


def split_beam_args(arguments: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(image inputs, Beam options): the ``--name[=value]`` arguments are Beam's.

    Raises:
        click.UsageError: for an option that Beam does not know either (a typo of one
            of this command's options would otherwise be ignored).
    """
    beam_args = [a for a in arguments if a.startswith("--")]
    images = [a for a in arguments if not a.startswith("--")]
    if beam_args:
        from apache_beam.options.pipeline_options import PipelineOptions

        beam_logger = logging.getLogger("apache_beam.options.pipeline_options")
        level = beam_logger.level
        beam_logger.setLevel(logging.ERROR)
        try:
            options = PipelineOptions(beam_args)
            unknown = (set(options.get_all_options(retain_unknown_options=True))
                       - set(options.get_all_options()))
        finally:
            beam_logger.setLevel(level)
        if unknown:
            names = ", ".join(f"--{name}" for name in sorted(unknown))
            raise click.UsageError(f"no such option: {names} (neither marco score's nor "
                                   "a Beam pipeline option)")
    return images, beam_args


@click.command("score", context_settings={"ignore_unknown_options": True})
@click.argument("images", nargs=-1, required=True)
@click.option("--model", required=True,
              help="Serving folder the pipeline pushes to (its highest numbered version "
                   "is used), or one version / any SavedModel folder, or the model "
                   "the MARCO initiative released (savedmodel.zip, unpacked).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("results.csv"), show_default=True,
              help="CSV file to write (replaced if it exists).")
@click.option("--hits", "hits_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Copy images whose crystal probability is above --hits-threshold into "
                   "this new (or empty) folder, named <rank>_<probability>_<file name>.")
@click.option("--hits-threshold", type=click.FloatRange(0, 1), default=0.7, show_default=True,
              help="Crystal probability above which an image is a hit.")
@click.option("--plate-well-pattern", default=DEFAULT_PLATE_WELL_PATTERN,
              help="Regular expression searched in each image path; its named groups "
                   "'plate' and 'well' fill those columns. The default reads "
                   "PLATE_A01..., PLATE/A01... and similar names.")
@click.option("--imaged-at-pattern", default=None,
              help="Regular expression for the imaged_at column: groups year, month, day "
                   "[hour, minute, second], or one group 'imaged_at' (ISO form). The "
                   "default reads the last date in the path (20140114 or 2014-01-14, "
                   "optionally with a time such as -080000); '' leaves the column empty.")
@click.option("--html", "html_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None,
              help="Also write the plate viewer of the results into this folder: a static "
                   "site to open from disk (see marco view).")
@click.option("--plate-format", type=click.Choice(("auto", "96", "384", "1536")),
              default="auto", show_default=True,
              help="With --html: wells per plate ('auto': from the well names).")
@click.option("--path-column", default=None,
              help="Column of CSV manifests holding the image paths [default: 'path', "
                   "'filename', 'image'... if in the header, else the first column].")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per model call.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Local worker threads sharing the model [default: all cores].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def score(images: tuple[str, ...], model: str, out: Path, hits_dir: Path | None,
          hits_threshold: float, plate_well_pattern: str, imaged_at_pattern: str | None,
          html_dir: Path | None, plate_format: str, path_column: str | None,
          batch_size: int, workers: int | None, quiet: bool) -> None:
    """Score drop images with a MARCO model; write a CSV file sorted by crystal probability.

    IMAGES are folders (searched recursively for image files), quoted globs
    ('plates/**/*.jpg'), manifests (.csv/.tsv with a path column, or .txt/.lst with one
    path a line, relative to the manifest) or image files. Each image gets one row:
    path, predicted class, the probabilities of clear, crystals, other and
    precipitate, plate and well, the imaging time read from the path (imaged_at),
    and an error for images that could not be scored (those rows come last).
    --html DIR also writes the plate viewer of the results (marco view).

    The work runs as an Apache Beam pipeline: here on the DirectRunner, or elsewhere
    with Beam options written as --name=value, e.g. --runner=DataflowRunner
    --project=P --region=R --temp_location=gs://B/tmp for images under gs://.
    Besides the progress bar and the results, everything the run logs or prints goes
    to a log file beside the CSV file (results.csv: results.log).

    \b
    Examples:
      marco score plates/ --model marco-run/serving --out results.csv --hits hits/
      marco score 'plates/**/*_A0?_*.jpg' --model marco-run/serving/1718000000
      marco score todays-images.txt --model marco-run/serving
      marco score plates/ --model marco-run/serving --html plates-site/
    """
    image_args, beam_args = split_beam_args(images)
    if not image_args:
        raise click.UsageError("give at least one folder, glob, manifest or image file")
    if imaged_at_pattern is not None:
        from components.tools.scoring.results import ImagedAtParser

        try:
            ImagedAtParser(imaged_at_pattern)
        except ValueError as exc:
            raise click.UsageError(f"--imaged-at-pattern: {exc}") from None
    if html_dir is not None and html_dir.is_file():
        raise click.UsageError(f"--html {html_dir}: is a file; give a folder for the site")
    from pipeline.local import console_and_log

    log_path = log_path_for(out)
    log_existed, out_existed = log_path.exists(), out.exists()
    try:
        with console_and_log(log_path) as console:
            console.echo(f"scoring with {model}; full log: {log_path}")
            _score(console, image_args, beam_args, model, out, hits_dir, hits_threshold,
                   plate_well_pattern, path_column, batch_size, workers, quiet)
            if imaged_at_pattern is not None:
                from components.tools.scoring.results import apply_imaged_at_pattern

                apply_imaged_at_pattern(str(out), imaged_at_pattern)
            if html_dir is not None:
                from pipeline.commands.view import build

                build(console.echo, str(out), html_dir, threshold=hits_threshold,
                      plate_format=plate_format, imaged_at_pattern=None,
                      institution_pattern=None, drop_pattern=None, thumb_size=128,
                      title=f"MARCO plate viewer: {out.name}", workers=workers,
                      progress=not quiet)
    except click.ClickException:
        # Stopped before anything was scored (no model, no such input): the message
        # says why, and no log is left beside a CSV file that was never written.
        if not log_existed and not out_existed and not out.exists():
            log_path.unlink(missing_ok=True)
        raise


def log_path_for(out: Path) -> Path:
    """Where ``marco score`` logs: beside the CSV file, ``results.csv`` -> ``results.log``."""
    return out.with_suffix(".log") if out.suffix != ".log" else out.with_name(out.name + ".log")


def _score(console: Console, image_args: list[str], beam_args: list[str], model: str, out: Path,
           hits_dir: Path | None, hits_threshold: float, plate_well_pattern: str,
           path_column: str | None, batch_size: int, workers: int | None,
           quiet: bool) -> None:
    from components.tools.scoring.beam import ScoreOptions, score_images
    from components.tools.scoring.inputs import InputError
    from components.tools.scoring.model import ModelNotFound

    try:
        options = ScoreOptions(
            hits_dir=str(hits_dir) if hits_dir else None,
            hits_threshold=hits_threshold,
            plate_well_pattern=plate_well_pattern,
            path_column=path_column,
            batch_size=batch_size,
            workers=workers,
            beam_args=tuple(beam_args),
            progress=not quiet,
        )
        summary = score_images(image_args, model, str(out), options)
    except (InputError, ModelNotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    found = summary.results
    if found.images == 0:
        raise click.ClickException(
            "no images found: folders are searched for files ending in "
            f"{', '.join(IMAGE_SUFFIXES)}"
        )
    echo = console.echo
    rate = found.images / summary.seconds if summary.seconds else 0.0
    version = f" (version {summary.model_version})" if summary.model_version is not None else ""
    echo(f"scored {found.scored} of {found.images} images in {summary.seconds:.0f} s "
         f"({rate:.1f} images/s) with the {summary.model_kind} {summary.model_dir}{version}")
    for name, count in sorted(found.by_class.items(), key=lambda item: -item[1]):
        echo(f"  {name:<12} {count:>8}")
    if found.errors:
        echo(f"  {'not scored':<12} {found.errors:>8}  (rows at the end of {out.name}, "
             "with the reason)")
    hits_line = (f"{found.hits} with crystal probability above {hits_threshold}")
    if hits_dir:
        hits_line += f", copied to {hits_dir}"
    echo(f"hits: {hits_line}")
    for failure in found.hit_failures:
        click.echo(f"  not copied: {failure}", file=console.err)
    echo(f"results: {summary.out}, highest crystal probability first")
    if found.scored == 0:
        raise click.ClickException("no image could be scored; see the error column")


@click.command("export-tflite")
@click.option("--model", required=True,
              help="Serving folder (its highest version is used) or a SavedModel folder.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("marco.tflite"), show_default=True, help="TF Lite file to write.")
@click.option("--check", "check_images", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Image to compare the two models on (repeatable) [default: a few "
                   "synthetic images].")
def export_tflite(model: str, out: Path, check_images: tuple[Path, ...]) -> None:
    """Convert a pushed MARCO model to TF Lite, checking it against the SavedModel.

    The TF Lite model takes one prepared image (float32 [1, size, size, 3]: centre
    square crop, bilinear resize to the model's size, values scaled to [-1, 1]) and
    returns the four class probabilities (clear, crystals, other, precipitate). It is
    written only if its probabilities match the SavedModel's within 1e-4.
    """
    from components.tools.scoring.model import ModelNotFound, resolve_model
    from components.tools.scoring.tflite import export_tflite as export

    try:
        version = resolve_model(model)
        result = export(version.path, str(out),
                        check_images=[p.read_bytes() for p in check_images] or None)
    except (ModelNotFound, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    size = result.input_size
    click.echo(f"wrote {out} ({result.size_bytes / 2**20:.1f} MiB) from {version.path}")
    click.echo(f"  input 'image': float32 [1, {size}, {size}, 3], centre square crop, bilinear "
               "resize, values in [-1, 1]")
    click.echo("  output 'probabilities': float32 [1, 4] (clear, crystals, other, precipitate)")
    if result.max_abs_difference is not None:
        click.echo(f"  largest difference from the SavedModel: {result.max_abs_difference:.1e}")
