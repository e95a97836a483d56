"""The ``marco synth`` commands: generate a synthetic MARCO-like data set, or preview it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

DEFAULT_REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real-drops"


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created; must be empty unless --overwrite).")
@click.option("--images", "-n", type=int, default=1000, show_default=True,
              help="Total number of images, split by the paper's Tables 1 and 2.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed; the same seed gives byte-identical files.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Size factor for every imager's frame, e.g. 0.25 for quick tests.")
@click.option("--format", "fmt", type=click.Choice(["folders", "marco-shards"]),
              default="folders", show_default=True,
              help="folders: each institution in its own catalogue layout; marco-shards: "
              "TFRecord shards in the published MARCO format.")
@click.option("--shards", type=int, default=4, show_default=True,
              help="Number of shards with --format marco-shards.")
@click.option("--workers", type=int, default=None,
              help="Rendering processes [default: all cores].")
@click.option("--catalogue", "catalogue_dir", type=click.Path(file_okay=False, exists=True,
              path_type=Path), default=None,
              help="Catalogue folder of institution YAML files [default: schemas/sources].")
@click.option("--overwrite", is_flag=True,
              help="Clear an earlier synth output in --out first.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@click.pass_context
def synth(
    ctx: click.Context,
    out: Path | None,
    images: int,
    seed: int,
    scale: float,
    fmt: str,
    shards: int,
    workers: int | None,
    catalogue_dir: Path | None,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Generate synthetic drop images shaped like the MARCO data set.

    Every institution of the catalogue gets images in its own layout (CSV manifest,
    JSON lines or one folder per label), its own label words and its imager's look
    (size, colour or greyscale, JPEG/PNG), in the paper's proportions. A synth.json
    summary with the counts is written beside them.

    \b
    Examples:
      marco synth --out data/synth --images 2000 --seed 1 --scale 0.25
      marco synth --out data/shards --images 500 --format marco-shards
      marco synth preview --out preview.png
    """
    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise click.UsageError("--out is required (the folder to write the data set to)")
    for name, value, low in (("--images", images, 1), ("--seed", seed, 0),
                             ("--shards", shards, 1), ("--workers", workers or 1, 1)):
        if value < low:
            raise click.BadParameter(f"must be at least {low}, got {value}", param_hint=name)
    if not 0 < scale <= 4:
        raise click.BadParameter(f"must be in (0, 4], got {scale}", param_hint="--scale")

    from components.catalogue import CatalogueError, load_catalogue
    from components.tools.synth.writer import SynthError, generate

    try:
        catalogue = load_catalogue(catalogue_dir)
        start = time.perf_counter()
        doc = generate(out, images, seed, catalogue=catalogue, scale=scale, fmt=fmt,
                       shards=shards, workers=workers, progress=not quiet, overwrite=overwrite)
    except (SynthError, CatalogueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if quiet:
        return
    elapsed = time.perf_counter() - start
    click.echo(f"wrote {images} images to {out} in {elapsed:.1f}s "
               f"({workers or os.cpu_count()} workers, seed {seed}, scale {scale})")
    for code, info in doc["institutions"].items():
        classes = ", ".join(f"{c} {n}" for c, n in info["classes"].items())
        click.echo(f"  {code:<8} {info['images']:>7}  {info['width']}x{info['height']}  "
                   f"{info['layout']:<16} {classes}")
        for note in info["notes"]:
            click.echo(f"  note: {note}", err=True)
    for line in doc.get("left_out", []):
        click.echo(f"  left out of the shards: {line}", err=True)


@synth.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("synth-preview.png"), show_default=True, help="PNG file to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the images.")
@click.option("--real", "real_dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_REAL, show_default=True,
              help="Folder of real drop photos with labels.csv (filename,label[,source]).")
@click.option("--scale", type=float, default=0.35, show_default=True,
              help="Size factor of the rendered images.")
@click.option("--catalogue", "catalogue_dir", type=click.Path(file_okay=False, exists=True,
              path_type=Path), default=None,
              help="Catalogue folder of institution YAML files [default: schemas/sources].")
def preview(out: Path, seed: int, real_dir: Path, scale: float,
            catalogue_dir: Path | None) -> None:
    """Draw a grid of synthetic drops (class by institution) beside real ones.

    Rows are the four classes, columns the institutions of the catalogue, then real
    MARCO photos of the same class, so the likeness can be judged by eye.
    """
    if seed < 0:
        raise click.BadParameter(f"must be at least 0, got {seed}", param_hint="--seed")
    if not 0 < scale <= 1:
        raise click.BadParameter(f"must be in (0, 1], got {scale}", param_hint="--scale")
    from components.catalogue import CatalogueError, load_catalogue
    from components.tools.synth.preview import make_preview

    try:
        catalogue = load_catalogue(catalogue_dir)
    except CatalogueError as exc:
        raise click.ClickException(str(exc)) from exc
    info = make_preview(out, seed=seed, real_dir=real_dir, catalogue=catalogue, scale=scale)
    if info["real_missing"]:
        click.echo(f"no real drops found at {real_dir}: preview shows synthetic images only",
                   err=True)
    click.echo(f"wrote {out} ({info['synthetic']} synthetic, {info['real']} real images)")
