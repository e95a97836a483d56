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


resolve_image_option = click.option(
    "--resolve-image", is_flag=True,
    help="Replace an image given by tag with its digest, asked from the registry (Artifact "
         "Registry and gcr.io with your Application Default Credentials).",
)


def cluster_settings(
    config_path: Path | None, flags: dict[str, Any], resolve_image: bool = False, *,
    image_needed: bool = True,
):
    """The checked settings of a command, with an image named by digest.

    ``image_needed`` False skips the image's digest (a command that takes an already
    compiled job, which names its own image).

    Raises:
        click.ClickException: a bad setting, a tag the registry cannot resolve, or an
            image without a digest; the message names the settings' source and field.
    """
    import dataclasses

    from kubeflow.runner import (
        RegistryError,
        SettingsError,
        has_digest,
        load_settings,
        require_digest,
        settings_source,
    )
    from kubeflow.runner import resolve_image as resolve

    overrides = _overrides(flags)
    source = settings_source(config_path, overrides)
    try:
        cluster = load_settings(config_path, overrides)
        if not image_needed:
            return cluster
        if resolve_image and not has_digest(cluster.image):
            try:
                image = resolve(cluster.image)
            except RegistryError as exc:
                raise SettingsError(f"{source}: image: {exc}") from None
            click.echo(f"image {cluster.image} is {image}")
            cluster = dataclasses.replace(cluster, image=image)
        require_digest(cluster.image, source)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    return cluster


# The settings file, shared by the commands that compile or submit.
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Cluster settings YAML (see kubeflow/pipeline.example.yaml); flags below override "
         "its fields.",
)


@click.command("compile")
@config_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("pipeline.json"), show_default=True,
              help="Pipeline job to write (JSON), for Vertex AI Pipelines.")
@click.option("--kfp-package", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the bare pipeline spec (YAML) for a Kubeflow Pipelines upload.")
@resolve_image_option
@_setting_options
def compile_command(
    config_path: Path | None, out: Path, kfp_package: Path | None, resolve_image: bool,
    **settings: Any,
) -> None:
    """Compile the MARCO pipeline into a KFP v2 spec from a settings file and flags.

    Submit the JSON job to Vertex AI Pipelines (``marco submit``), or upload the
    ``--kfp-package`` YAML to Kubeflow Pipelines; every setting is checked first, and
    a bad one is named. The image must be named by digest (or ``--resolve-image``).
    """
    import yaml

    from kubeflow.runner import compile_pipeline, kubeflow_package

    cluster = cluster_settings(config_path, settings, resolve_image)
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
