"""``marco compile``: the KFP v2 pipeline spec for Kubeflow Pipelines or Vertex AI."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("compile")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Cluster settings YAML (see kubeflow/pipeline.example.yaml).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("pipeline.json"), show_default=True, help="Spec file to write.")
def compile_command(config_path: Path, out: Path) -> None:
    """Compile the MARCO pipeline into a KFP v2 spec (JSON) from a settings file."""
    from kubeflow.runner import SettingsError, compile_pipeline, load_settings

    try:
        settings = load_settings(config_path)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    compile_pipeline(settings, str(out))
    click.echo(f"wrote {out} (image {settings.image}, root {settings.pipeline_root})")
