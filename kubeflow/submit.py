"""Starting a run of the compiled job: the parameter values only known at submission.

Kubeflow V2 (Vertex AI Pipelines, Kubeflow Pipelines 2) runs no custom TFX drivers,
so two values that a local run computes when a component starts are computed here,
when the run is submitted, and passed as runtime parameters:

- ``input_fingerprint``: the digest of the files ImageExampleGen will read (file
  listing only: paths, sizes and modification times, plus the catalogue's content;
  :func:`components.ingestion.driver.input_fingerprint`). It is one of
  ImageExampleGen's parameters, so its cache key changes with the data, and an
  unchanged re-run stays cached.
- ``served_version``: the newest model version in the serving folder, or while
  nothing is served the ``init_from`` model's version
  (:func:`components.baseline.baseline_key`), likewise the served-model baseline's
  cache key, so a new push, or a new init model, is noticed.

:func:`submission_parameters` gives every runtime parameter's value for one run;
:func:`submit` starts it on Vertex AI Pipelines.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from kubeflow.runner import (
    DATA_DIR_PARAMETER,
    INPUT_FINGERPRINT_PARAMETER,
    MARCO_SHARDS_PARAMETER,
    SERVED_VERSION_PARAMETER,
    TRAIN_ARGS_PARAMETER,
    ClusterSettings,
    SettingsError,
    declared_parameters,
    path_problem,
    runtime_parameters,
)

# Every runtime parameter a compiled job may have (data_dir and marco_shards only when
# their setting was given at compile time).
RUNTIME_PARAMETERS = (
    DATA_DIR_PARAMETER,
    MARCO_SHARDS_PARAMETER,
    TRAIN_ARGS_PARAMETER,
    INPUT_FINGERPRINT_PARAMETER,
    SERVED_VERSION_PARAMETER,
)
# Parameters that name folders or globs the run reads.
_PATH_PARAMETERS = (DATA_DIR_PARAMETER, MARCO_SHARDS_PARAMETER)


class SubmissionError(ValueError):
    """A run cannot be started with these values; the message names the parameter."""


def data_fingerprint(
    data_dir: str | None, marco_shards: str | None, catalogue_dir: str | None = None
) -> str:
    """The fingerprint ImageExampleGen's local driver would compute for these inputs.

    ``catalogue_dir`` None means the project's catalogue (``schemas/sources``).

    Raises:
        SubmissionError: the inputs cannot be listed (no data for an institution, a
            shard glob matching nothing, a bad catalogue).
    """
    from components.catalogue import local_catalogue
    from components.ingestion import executor
    from components.ingestion.driver import fingerprint_from_properties

    with local_catalogue(catalogue_dir) as catalogue:
        properties = {
            executor.DATA_DIR_KEY: data_dir,
            executor.MARCO_SHARDS_KEY: marco_shards,
            executor.CATALOGUE_DIR_KEY: catalogue,
            executor.INSTITUTIONS_KEY: None,
        }
        try:
            return fingerprint_from_properties(properties)
        except (OSError, ValueError) as exc:  # CatalogueError is a ValueError
            where = ", ".join(f"{k} {v}" for k, v in (("data_dir", data_dir),
                                                       ("marco_shards", marco_shards)) if v)
            raise SubmissionError(
                f"{INPUT_FINGERPRINT_PARAMETER}: cannot list the inputs ({where}): {exc}"
            ) from exc


def served_version(serving_dir: str, init_from: str | None = None) -> str:
    """What the baseline will be: the newest served version in ``serving_dir``, else
    ``init:<version>`` of the ``init_from`` model; "" when there is neither.

    Raises:
        SubmissionError: ``init_from`` holds no SavedModel (and nothing is served).
    """
    from components.baseline import baseline_key

    try:
        return baseline_key(serving_dir, init_from)
    except FileNotFoundError as exc:
        raise SubmissionError(f"init_from: {exc}") from None


def _check_train_args(value: str) -> None:
    from google.protobuf import json_format
    from tfx.proto import trainer_pb2

    try:
        if not isinstance(json.loads(value), dict):
            raise ValueError("not a JSON object")
        json_format.Parse(value, trainer_pb2.TrainArgs())
    except (ValueError, json_format.ParseError) as exc:
        raise SubmissionError(
            f"{TRAIN_ARGS_PARAMETER}: not the JSON of TFX TrainArgs "
            f"(e.g. {{\"num_steps\": 1000}}): {exc}"
        ) from None


def submission_parameters(
    settings: ClusterSettings,
    overrides: Mapping[str, str] | None = None,
    job: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Every runtime parameter's value for one run of the compiled job.

    The settings give the defaults (``data_dir``, ``marco_shards``, ``train_args``);
    ``overrides`` set any of :data:`RUNTIME_PARAMETERS`. With ``job`` (the compiled
    job the run starts), the values are exactly the parameters it declares: one the
    settings lack keeps the job's default, one the job lacks is left out (and refused
    in ``overrides``), as Vertex AI would run it. Then, unless given in ``overrides``:

    - ``input_fingerprint`` is the digest of the files the run will read: its
      ``data_dir`` and ``marco_shards``, with the settings' ``catalogue_dir`` (or the
      project's catalogue);
    - ``served_version`` is the newest model version in ``settings.serving_root``
      (``serving_dir``, or ``<pipeline_root>/serving``), or while nothing is served
      there, ``init:<version>`` of ``settings.init_from``.

    Raises:
        SubmissionError: an unknown parameter, a path that is neither gs:// nor
            absolute, train_args that are not TrainArgs JSON, or inputs that cannot
            be listed.
    """
    overrides = dict(overrides or {})
    values = runtime_parameters(settings)
    unknown = sorted(set(overrides) - set(RUNTIME_PARAMETERS))
    if unknown:
        raise SubmissionError(
            f"{unknown[0]}: not a runtime parameter of the pipeline (those are "
            f"{', '.join(RUNTIME_PARAMETERS)})"
        )
    if job is not None:
        for_job(job, {}, overrides)
        defaults = job.get("runtimeConfig", {}).get("parameterValues", {})
        values = {name: values[name] if name in values else str(defaults.get(name, ""))
                  for name in declared_parameters(job)}
    for name in _PATH_PARAMETERS:
        if overrides.get(name):
            problem = path_problem(overrides[name])
            if problem:
                raise SubmissionError(f"{name}: {problem}")
    values.update(overrides)
    if TRAIN_ARGS_PARAMETER in values:
        _check_train_args(values[TRAIN_ARGS_PARAMETER])
    if INPUT_FINGERPRINT_PARAMETER in values and INPUT_FINGERPRINT_PARAMETER not in overrides:
        values[INPUT_FINGERPRINT_PARAMETER] = data_fingerprint(
            values.get(DATA_DIR_PARAMETER) or None,
            values.get(MARCO_SHARDS_PARAMETER) or None,
            settings.catalogue_dir,
        )
    if SERVED_VERSION_PARAMETER in values and SERVED_VERSION_PARAMETER not in overrides:
        values[SERVED_VERSION_PARAMETER] = served_version(settings.serving_root,
                                                          settings.init_from)
    return values


def for_job(
    job: Mapping[str, Any], values: Mapping[str, str], given: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``values`` restricted to the runtime parameters ``job`` declares.

    Vertex AI refuses a value for a parameter the job lacks (with no ``marco_shards``
    setting at compile time there is no ``marco_shards`` parameter).
    ``submission_parameters(settings, overrides, job)`` does this itself, and also
    fingerprints only the data the job reads.

    Raises:
        SubmissionError: a parameter in ``given`` (set by the user) that the job lacks.
    """
    declared = declared_parameters(job)
    missing = sorted(set(given or {}) - set(declared))
    if missing:
        raise SubmissionError(
            f"{missing[0]}: the compiled job has no such runtime parameter (it has "
            f"{', '.join(sorted(declared))}); compile it with that setting"
        )
    return {name: value for name, value in values.items() if name in declared}


def parameter_lines(values: Mapping[str, str]) -> list[str]:
    """``--runtime-parameter NAME=VALUE`` lines, quoted for a shell (``tfx run create``)."""
    return [f"--runtime-parameter {shlex.quote(f'{name}={value}')}"
            for name, value in sorted(values.items())]


def job_display_name(job: Mapping[str, Any]) -> str:
    return job.get("displayName") or job["pipelineSpec"]["pipelineInfo"]["name"]


def submit(
    settings: ClusterSettings,
    template_path: str,
    parameter_values: Mapping[str, str],
    *,
    display_name: str = "marco",
):
    """Starts one run of the compiled job on Vertex AI Pipelines; returns the PipelineJob.

    The run writes under the settings' pipeline root, caches as ``enable_cache`` says,
    and runs as the settings' service account (the project's default Compute Engine
    account when unset).
    """
    from google.cloud import aiplatform

    job = aiplatform.PipelineJob(
        display_name=display_name,
        template_path=template_path,
        pipeline_root=settings.pipeline_root,
        parameter_values=dict(parameter_values),
        enable_caching=settings.enable_cache,
        project=settings.project,
        location=settings.region,
    )
    job.submit(service_account=settings.service_account)
    return job


def console_link(job) -> str:
    """The Google Cloud console page of a submitted run."""
    return job._dashboard_uri()


def load_job(path: str) -> dict:
    """A compiled job (JSON) from a local or gs:// path.

    Raises:
        SettingsError: unreadable, or not a pipeline job.
    """
    from components import filesystem

    try:
        job = json.loads(filesystem.read_bytes(path))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: cannot read a compiled job: {exc}") from None
    if not isinstance(job, dict) or "pipelineSpec" not in job:
        raise SettingsError(f"{path}: not a compiled pipeline job (no pipelineSpec)")
    return job
