"""``marco compile``: the KFP v2 pipeline spec for Kubeflow Pipelines or Vertex AI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from kubeflow.runner import SETTING_FIELDS

# What a flag value of an optional setting means "not set" (e.g. CPU-only training).
UNSET = "none"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _setting_options(command: Callable) -> Callable:
    """One option per cluster setting, typed like the setting; absent flags change nothing."""
    for name, field in reversed(list(SETTING_FIELDS.items())):
        kind = {"int": click.INT, "bool": click.BOOL}.get(str(field.type), click.STRING)
        help_text = field.metadata["help"]
        if "None" in str(field.type):
            help_text += f" '{UNSET}' unsets it."
        command = click.option(_flag(name), name, type=kind, default=None, help=help_text)(
            command
        )
    return command


def _overrides(values: dict[str, Any]) -> dict[str, Any]:
    result = {}
    for name, value in values.items():
        if value is None:
            continue
        optional = "None" in str(SETTING_FIELDS[name].type)
        result[name] = None if optional and str(value).lower() == UNSET else value
    return result


@click.command("compile")
@click.option("--config", "config_path",
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Cluster settings YAML (see kubeflow/pipeline.example.yaml); flags "
                   "below override its fields.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("pipeline.json"), show_default=True,
              help="Pipeline job to write (JSON), for Vertex AI Pipelines.")
@click.option("--kfp-package", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the bare pipeline spec (YAML) for a Kubeflow Pipelines upload.")
@_setting_options
def compile_command(
    config_path: Path | None, out: Path, kfp_package: Path | None, **settings: Any
) -> None:
    """Compile the MARCO pipeline into a KFP v2 spec from a settings file and flags.

    Submit the JSON job to Vertex AI Pipelines, or upload the ``--kfp-package`` YAML to
    Kubeflow Pipelines; every setting is checked first, and a bad one is named.
    """
    import yaml

    from kubeflow.runner import SettingsError, compile_pipeline, kubeflow_package, load_settings

    try:
        cluster = load_settings(config_path, _overrides(settings))
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    job = compile_pipeline(cluster, str(out))
    if kfp_package:
        kfp_package.parent.mkdir(parents=True, exist_ok=True)
        kfp_package.write_text(yaml.safe_dump(kubeflow_package(job), sort_keys=False))
        click.echo(f"wrote {kfp_package} (Kubeflow Pipelines package)")
    click.echo(
        f"wrote {out} (image {cluster.image}, root {cluster.pipeline_root}, "
        f"{cluster.training_workers} training replica(s) x "
        f"{cluster.accelerator_count if cluster.accelerator_type else 0} "
        f"{cluster.accelerator_type or 'GPU'}, {cluster.train_steps} steps)"
    )
