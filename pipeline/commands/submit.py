"""``marco submit``: one run of the compiled pipeline on Vertex AI Pipelines."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from pipeline.commands.compile import (
    _setting_options,
    cluster_settings,
    config_option,
    resolve_image_option,
)


def _parse_parameters(items: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE",
                                     param_hint="--runtime-parameter")
        values[name] = value
    return values


@click.command("submit")
@config_option
@click.option("--job", "job_path", default=None,
              help="An already compiled job (JSON, local or gs://), e.g. marco compile's "
                   "--out or the TFX CLI's ~/tfx/vertex/marco/pipeline.json; default: "
                   "compile one from the settings.")
@click.option("--runtime-parameter", "parameters", multiple=True, metavar="NAME=VALUE",
              help="Set a runtime parameter for this run (repeatable); the others come "
                   "from the settings, and input_fingerprint and served_version are "
                   "computed now.")
@click.option("--print-parameters", is_flag=True,
              help="Only print the run's parameters as --runtime-parameter lines (for "
                   "`tfx run create`); submit nothing.")
@click.option("--wait", is_flag=True, help="Wait until the run ends.")
@resolve_image_option
@_setting_options
def submit_command(
    config_path: Path | None,
    job_path: str | None,
    parameters: tuple[str, ...],
    print_parameters: bool,
    wait: bool,
    resolve_image: bool,
    **settings: Any,
) -> None:
    """Start a Vertex AI Pipelines run, with the data's fingerprint and the served version.

    Computes the fingerprint of the files the run will read and the newest model
    version in the serving folder, passes them as the runtime parameters
    input_fingerprint and served_version (so cached steps are reused only when
    neither changed), then submits the job as the settings' service account and
    prints the run's console link.
    """
    from kubeflow.runner import SettingsError, compile_pipeline, has_digest, job_images
    from kubeflow.submit import (
        SubmissionError,
        console_link,
        job_display_name,
        load_job,
        parameter_lines,
        submission_parameters,
        submit,
    )

    given = _parse_parameters(parameters)
    with tempfile.TemporaryDirectory(prefix="marco-submit-") as folder:
        if job_path:
            # A compiled job names its own image; the settings' one is not used.
            cluster = cluster_settings(config_path, settings, image_needed=False)
            try:
                job = load_job(job_path)
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from None
            tagged = sorted(image for image in job_images(job) if not has_digest(image))
            if tagged:
                raise click.ClickException(
                    f"{job_path}: runs image {tagged[0]} without a digest; compile it again "
                    "with `marco compile`"
                )
            template = job_path
        else:
            cluster = cluster_settings(config_path, settings, resolve_image)
            template = str(Path(folder) / "pipeline.json")
            job = compile_pipeline(cluster, template)
        try:
            values = submission_parameters(cluster, given, job)
        except SubmissionError as exc:
            raise click.ClickException(str(exc)) from None
        if print_parameters:
            for line in parameter_lines(values):
                click.echo(line)
            return
        run = submit(cluster, template, values, display_name=job_display_name(job))
    click.echo(f"submitted {run.resource_name}")
    for name, value in sorted(values.items()):
        click.echo(f"  {name} = {value}")
    click.echo(f"console: {console_link(run)}")
    if wait:
        run.wait()
        click.echo(f"finished: {run.state.name if run.state is not None else 'unknown'}")
