"""``marco schema``: regenerate the TFDV schema from the catalogue, or check it is current."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.commands.sources import catalogue_option, load_or_exit
from schemas import SCHEMA_FILE

schema_file_option = click.option(
    "--schema-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=SCHEMA_FILE,
    show_default=True,
    help="The schema file to write or check.",
)


@click.group()
def schema() -> None:
    """The curated TFDV schema (schemas/schema.pbtxt), generated from the catalogue.

    Runs with the project's catalogue validate against this file. A run given a
    catalogue folder of its own (`marco run --catalogue DIR`, or catalogue_dir on
    Vertex AI and Kubeflow) derives its schema from that folder when it starts.
    """


@schema.command("update")
@catalogue_option
@schema_file_option
def update(catalogue_dir: Path | None, schema_file: Path) -> None:
    """Rewrite the schema so its domains match the catalogue."""
    from components.schema_gen import update_schema

    catalogue = load_or_exit(catalogue_dir)
    if not update_schema(catalogue, schema_file):
        click.echo(f"{schema_file} is up to date")
        return
    click.echo(
        f"wrote {schema_file}: {len(catalogue)} institutions, "
        f"{len({n for _, n in catalogue.native_labels()})} native labels"
    )


@schema.command("check")
@catalogue_option
@schema_file_option
def check(catalogue_dir: Path | None, schema_file: Path) -> None:
    """Exit non-zero when the schema no longer matches the catalogue."""
    from components.schema_gen import stale_reason

    reason = stale_reason(load_or_exit(catalogue_dir), schema_file)
    if reason:
        raise click.ClickException(f"{reason}\nRun `marco schema update` and commit the result.")
    click.echo(f"{schema_file} matches the catalogue")
