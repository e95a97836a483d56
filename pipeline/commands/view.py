"""``marco view``: the plate viewer of a results file, as a static site."""

from __future__ import annotations

from pathlib import Path

import click

from components.tools.scoring.results import DEFAULT_HITS_THRESHOLD, DEFAULT_IMAGED_AT_PATTERN

PLATE_FORMAT_CHOICES = ("auto", "96", "384", "1536")


def viewer_options(function):
    """The options ``marco view`` and ``marco score --html`` share."""
    options = [
        click.option("--plate-format", type=click.Choice(PLATE_FORMAT_CHOICES), default="auto",
                     show_default=True,
                     help="Wells per plate for every plate; 'auto' takes the smallest "
                          "standard plate (96, 384, 1536) holding all of a plate's wells."),
        click.option("--institution-pattern", default=None,
                     help="Regular expression searched in each image path whose group "
                          "'institution' names the institution, for rows without an "
                          "'institution' column."),
        click.option("--drop-pattern", default=None,
                     help="Regular expression searched in each image path whose group "
                          "'drop' names the drop within its well (default: every well "
                          "holds drop 1 unless the file has a 'drop' column)."),
        click.option("--heatmaps", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="The heatmaps CSV file marco explain wrote: each image's overlay "
                          "is shown over it."),
        click.option("--thumb-size", type=click.IntRange(16, 1024), default=128,
                     show_default=True, help="Longer side of the thumbnails, in pixels."),
        click.option("--title", default="MARCO plate viewer", show_default=True,
                     help="The page's title."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def build(console_echo, csv_path: str, out_dir: Path, *, threshold: float, plate_format: str,
          imaged_at_pattern: str | None, institution_pattern: str | None,
          drop_pattern: str | None, thumb_size: int, title: str, workers: int | None,
          progress: bool, heatmaps: str | None = None) -> None:
    """Builds the site and reports it through ``console_echo``; errors as ClickException."""
    from components.tools.viewer import ResultsError, ViewerOptions, build_site

    try:
        options = ViewerOptions(
            threshold=threshold,
            plate_format=None if plate_format == "auto" else int(plate_format),
            imaged_at_pattern=imaged_at_pattern,
            institution_pattern=institution_pattern,
            drop_pattern=drop_pattern,
            heatmaps=heatmaps,
            thumb_size=thumb_size,
            workers=workers,
            title=title,
            progress=progress,
        )
        summary = build_site(csv_path, str(out_dir), options)
    except (ResultsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    console_echo(f"plate viewer: {summary.images} images, {summary.drops} drops on "
                 f"{summary.plates} plate{'' if summary.plates == 1 else 's'} "
                 f"({summary.dated} with an imaging time"
                 + (f", {summary.heatmaps} with a heatmap" if summary.heatmaps else "")
                 + "); "
                 f"{summary.thumbnails_written} thumbnails written, "
                 f"{summary.thumbnails_reused} reused; {summary.bytes / 2**20:.1f} MiB "
                 f"in {summary.seconds:.1f} s")
    for error in summary.thumbnail_errors[:10]:
        console_echo(f"  no thumbnail: {error}")
    if len(summary.thumbnail_errors) > 10:
        console_echo(f"  ... and {len(summary.thumbnail_errors) - 10} more without a thumbnail")
    console_echo(f"open {summary.index}")


@click.command("view")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Folder for the site (created; an earlier site there is "
                                  "updated, reusing its thumbnails).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=DEFAULT_HITS_THRESHOLD,
              show_default=True,
              help="Crystal probability the page's ranking starts with (adjustable there).")
@click.option("--imaged-at-pattern", default=DEFAULT_IMAGED_AT_PATTERN,
              help="Regular expression for the imaging time of rows without an 'imaged_at' "
                   "value: groups year, month, day [hour, minute, second], or one group "
                   "'imaged_at' (ISO form). The default reads the last date in the path "
                   "(20140114 or 2014-01-14, optionally with a time such as -080000); "
                   "'' reads none.")
@viewer_options
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes writing thumbnails [default: all cores].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def view(results: Path, out_dir: Path, threshold: float, imaged_at_pattern: str,
         plate_format: str, institution_pattern: str | None, drop_pattern: str | None,
         heatmaps: str | None, thumb_size: int, title: str, workers: int | None,
         quiet: bool) -> None:
    """Write the plate viewer of a results file: a static site to open from disk.

    RESULTS is a CSV file `marco score` wrote (or any CSV file with the columns path,
    clear, crystals, other and precipitate; plate, well, imaged_at, institution, drop,
    heatmap and error are read when present; --heatmaps adds the overlays marco
    explain wrote). OUT gets index.html, its script and
    style, the data and one small thumbnail per image: no server and no network are
    needed, open OUT/index.html in a browser.

    The page shows each plate as a grid in its real geometry, each drop's thumbnail
    coloured by predicted class with its crystal probability; a ranked list of likely
    crystals with a threshold; filters by class, institution, plate and date; and,
    where images carry an imaging time, each drop's time course.

    \b
    Examples:
      marco view results.csv --out plates-site/
      marco view results.csv --out site/ --plate-format 1536 --drop-pattern '_(?P<drop>[1-3])_'
    """
    build(click.echo, str(results), out_dir, threshold=threshold, plate_format=plate_format,
          imaged_at_pattern=imaged_at_pattern, institution_pattern=institution_pattern,
          drop_pattern=drop_pattern, thumb_size=thumb_size, title=title, workers=workers,
          progress=not quiet, heatmaps=heatmaps)
