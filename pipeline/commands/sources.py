"""``marco sources``: inspect the catalogue, draft a new institution's file, check data."""

from __future__ import annotations

import json
from pathlib import Path

import click

from components.catalogue import CatalogueError, load_catalogue
from components.names import CLASS_NAMES

catalogue_option = click.option(
    "--catalogue",
    "catalogue_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of institution YAML files (default: the project's schemas/sources).",
)


def load_or_exit(catalogue_dir: Path | None):
    """Load the catalogue, turning a malformed file into a clean CLI error."""
    try:
        return load_catalogue(catalogue_dir)
    except CatalogueError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def sources() -> None:
    """The institutions of the source catalogue (schemas/sources/*.yaml)."""


@sources.command("list")
@catalogue_option
def list_sources(catalogue_dir: Path | None) -> None:
    """List institutions, their imager, layout and label vocabulary."""
    catalogue = load_or_exit(catalogue_dir)
    total = 0
    for source in catalogue:
        by_class = {name: [] for name in CLASS_NAMES}
        for label in source.labels:
            by_class[label.class_name].append(label.native)
        total += len(source.labels)
        click.echo(f"{source.code}  {source.name}")
        click.echo(f"    imager: {source.imager}; setup: {source.setup}")
        click.echo(f"    layout: {source.layout.reader}; file: {source.file}")
        for name in CLASS_NAMES:
            click.echo(f"    {name:<12} {', '.join(repr(w) for w in by_class[name]) or '-'}")
    click.echo(f"{len(catalogue)} institutions, {total} native labels")


@sources.command("validate")
@click.argument("data_dir")
@catalogue_option
@click.option("--only", "institutions", multiple=True, help="Check only this institution code "
              "(repeatable).")
@click.option("--no-images", is_flag=True, help="Check that image files exist, without "
              "decoding them (fast).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes for decoding images (default: all cores).")
@click.option("--max-problems", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many offending records to list.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the report as JSON to this file.")
def validate(
    data_dir: str,
    catalogue_dir: Path | None,
    institutions: tuple[str, ...],
    no_images: bool,
    workers: int | None,
    max_problems: int,
    json_out: Path | None,
) -> None:
    """Check DATA_DIR against the catalogue; exit 1 when any record has a problem.

    DATA_DIR is a local folder or an object-store URL (gs://bucket/data). Every
    record is judged by ingestion's own rules, so each one reported here is one
    ImageExampleGen would quarantine, for the same reason. Reports per institution
    the records read, usable and refused, counts per native label and per class,
    unmapped labels (with counts and example files), image ids shared between
    institutions, then the first refused records and the total.
    """
    from components import filesystem
    from components.tools.validation import format_report, validate_data

    try:
        is_folder = filesystem.isdir(data_dir)
    except OSError as exc:
        raise click.BadParameter(f"{data_dir}: {exc}", param_hint="DATA_DIR") from None
    if not is_folder:
        raise click.BadParameter(f"{data_dir} is not a folder", param_hint="DATA_DIR")
    catalogue = load_or_exit(catalogue_dir)
    unknown = [code for code in institutions if code not in catalogue.codes]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)} not in the catalogue ({', '.join(catalogue.codes)})",
            param_hint="--only",
        )
    report = validate_data(
        catalogue,
        data_dir,
        institutions=institutions or None,
        check_images=not no_images,
        workers=workers,
        progress=True,
    )
    click.echo(format_report(report, max_problems=max_problems))
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if not report.ok:
        raise SystemExit(1)


@sources.command("add")
@click.argument("code")
@click.option("--from", "data_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The new institution's folder (images and any manifest or export).")
@catalogue_option
@click.option("--data-root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The folder the pipeline's data_dir will point at, which "
              "the draft's paths are relative to (default: the parent of --from).")
@click.option("--name", default=None, help="The institution's full name.")
@click.option("--imager", default=None, help="The imager(s) that took the images.")
@click.option("--setup", default=None, help="Crystallization set-up, e.g. 'Sitting drop'.")
@click.option("--label-column", default=None, help="Column (CSV), dotted key (JSON lines) "
              "or element path (XML, e.g. Score) holding the label, when the detected one is "
              "wrong.")
@click.option("--path-column", default=None, help="Column, dotted key or element path (e.g. "
              "Image/@path) holding the image path, when the detected one is wrong.")
@click.option("--force", is_flag=True, help="Overwrite an existing draft of CODE.")
def add(
    code: str,
    data_dir: Path,
    catalogue_dir: Path | None,
    data_root: Path | None,
    name: str | None,
    imager: str | None,
    setup: str | None,
    label_column: str | None,
    path_column: str | None,
    force: bool,
) -> None:
    """Draft schemas/sources/CODE.yaml for a new institution from its files.

    Detects the layout (CSV/TSV manifest, JSON lines, XML export or one folder per
    label) and which column, key or element path holds the image path, label, id,
    plate, well and imaging time; reads every record to list each native label with
    its count; says how many files of each type it found and did not use, and why;
    and writes a draft whose label classes are left empty, with suggestions as
    comments. The catalogue refuses the draft until every class is filled in.
    """
    from components.tools.drafting import DraftError, add_source, describe
    from schemas import SOURCES_DIR

    command = " ".join(["marco sources add", code, "--from", str(data_dir)])
    try:
        draft = add_source(
            code,
            data_dir,
            catalogue_dir if catalogue_dir is not None else SOURCES_DIR,
            data_root=data_root,
            name=name,
            imager=imager,
            setup=setup,
            force=force,
            label_column=label_column,
            path_column=path_column,
            command=command,
        )
    except DraftError as exc:
        raise click.ClickException(str(exc)) from None
    for line in describe(draft):
        click.echo(line)
