"""Compiles the one MARCO graph into a KFP v2 pipeline spec for Kubeflow or Vertex AI.

Used three ways: ``marco compile --config FILE --out pipeline.json`` (flags may
override any setting); the TFX CLI (``tfx pipeline create --engine vertex
--pipeline_path kubeflow/runner.py``), which runs this file as a script (the settings
file then comes from ``$MARCO_KUBEFLOW_CONFIG`` or ``kubeflow/pipeline.yaml``); and
uploading the JSON to a Kubeflow Pipelines cluster. Only configuration differs from a
local run: the graph is :func:`pipeline.pipeline.create_pipeline`, never a copy. Here
it gets Dataflow for its Beam components, a Vertex AI training job on a GPU worker
pool for the Trainer, an optional Vertex AI endpoint beside the serving directory,
and runtime parameters for what changes from run to run (the data, the number of
training steps, and the digests :mod:`kubeflow.submit` computes when a run starts:
the input files' fingerprint and the newest served model version).

Every container of the compiled job, every Dataflow worker and every training replica
runs one image, named by digest; with ``beam_runner: DirectRunner`` and local paths
the same spec also runs on one machine, task by task.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

import components  # noqa: F401  (Keras 2 before TensorFlow)
from components.names import NO_DATA_SOURCE

CONFIG_ENV = "MARCO_KUBEFLOW_CONFIG"
DEFAULT_CONFIG = Path(__file__).with_name("pipeline.yaml")
DEFAULT_OUTPUT = "marco_pipeline.json"

# Where the Dockerfile puts this project inside the image. Paths the spec hands to
# containers (the curated schema) must be paths in there, not on the compiling machine.
CONTAINER_PROJECT_DIR = "/pipeline"
CONTAINER_SCHEMA_FILE = f"{CONTAINER_PROJECT_DIR}/schemas/schema.pbtxt"

# Runtime parameters: set per run with `tfx run create --runtime-parameter NAME=VALUE`
# or in the Vertex AI / Kubeflow console; the settings file gives their defaults.
DATA_DIR_PARAMETER = "data_dir"
MARCO_SHARDS_PARAMETER = "marco_shards"
TRAIN_ARGS_PARAMETER = "train_args"
# Filled by kubeflow.submit when a run starts; empty in the compiled job. They are
# part of the cache keys of ImageExampleGen and of the served-model baseline, which
# otherwise would not notice new data or a new push (Kubeflow V2 runs no drivers).
INPUT_FINGERPRINT_PARAMETER = "input_fingerprint"
SERVED_VERSION_PARAMETER = "served_version"

# Where Beam work runs: Dataflow on Google Cloud, or in the task's own process.
BEAM_RUNNERS = ("DataflowRunner", "DirectRunner")
DIRECT_BEAM_ARGS = (
    "--runner=DirectRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=2",
)
# Settings that name folders or globs: gs:// on Google Cloud, or absolute local paths
# for a run on one machine (beam_runner: DirectRunner).
PATH_SETTINGS = ("pipeline_root", "data_dir", "marco_shards", "serving_dir", "catalogue_dir",
                 "init_from")
# Read by Dataflow workers and Vertex AI, which cannot see this machine's disk.
CLOUD_PATH_SETTINGS = ("pipeline_root", "data_dir", "marco_shards", "serving_dir", "init_from")

# An immutable image reference: NAME@sha256:<64 hex digits> (NAME may keep a tag).
_IMAGE_DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")

# NVIDIA GPUs Vertex AI training accepts (google.cloud.aiplatform_v1 AcceleratorType
# names), each with the machine families that carry it. TPUs are left out: the
# trainer has no TPU strategy; K80s reached end of support in 2024.
ACCELERATOR_MACHINES: Mapping[str, tuple[str, ...]] = {
    "NVIDIA_TESLA_T4": ("n1-",),
    "NVIDIA_TESLA_P4": ("n1-",),
    "NVIDIA_TESLA_P100": ("n1-",),
    "NVIDIA_TESLA_V100": ("n1-",),
    "NVIDIA_L4": ("g2-standard-",),
    "NVIDIA_TESLA_A100": ("a2-highgpu-", "a2-megagpu-"),
    "NVIDIA_A100_80GB": ("a2-ultragpu-",),
    "NVIDIA_H100_80GB": ("a3-highgpu-",),
    "NVIDIA_H100_MEGA_80GB": ("a3-megagpu-",),
    "NVIDIA_H200_141GB": ("a3-ultragpu-",),
    "NVIDIA_B200": ("a4-highgpu-",),
}
RETIRED_ACCELERATORS: Mapping[str, str] = {
    "NVIDIA_TESLA_K80": "reached end of support on Google Cloud in 2024",
}
# GPUs per machine: n1 machines take 1, 2, 4 or 8; g2-standard-N carries a fixed
# number; a2/a3/a4 machine names end in the count ("a2-highgpu-4g").
N1_GPU_COUNTS = (1, 2, 4, 8)
G2_GPUS = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}

# Vertex AI's prebuilt TensorFlow prediction image (the newest TensorFlow it offers).
SERVING_IMAGE = "{location}-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"

_PROJECT = re.compile(r"^([a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+(-[a-z]+)+\d+$")
_MACHINE = re.compile(r"^[a-z][a-z0-9]*-[a-z0-9-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]+$")


class SettingsError(ValueError):
    """A cluster setting is missing or wrong; the message names the field."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """Where and how the pipeline runs on Google Cloud; read from one YAML file.

    Each field's ``help`` (also the help of its ``marco compile`` flag) says what it
    is; ``kubeflow/pipeline.example.yaml`` shows the usual ones.
    """

    project: str = field(metadata=_help("Google Cloud project id."))
    region: str = field(metadata=_help("Region of Vertex AI and Dataflow, e.g. europe-west4."))
    pipeline_root: str = field(metadata=_help(
        "gs:// folder for the pipeline's artifacts (an absolute local path with "
        "beam_runner DirectRunner)."
    ))
    image: str = field(metadata=_help(
        "Container image with TFX 1.16 and this project (built from ./Dockerfile), by "
        "digest: NAME@sha256:<64 hex digits>."
    ))
    data_dir: str | None = field(default=None, metadata=_help(
        "gs:// folder of the institutions' raw data (default of runtime parameter data_dir)."
    ))
    marco_shards: str | None = field(default=None, metadata=_help(
        "gs:// glob of published MARCO TFRecord shards (default of runtime parameter "
        "marco_shards)."
    ))
    catalogue_dir: str | None = field(default=None, metadata=_help(
        "Folder of institution YAML files, gs:// or an absolute path (default: the "
        "project's schemas/sources). The schema the run validates against is then "
        "derived from it when the run starts, so it may add institutions."
    ))
    quarantine_budget: float = field(default=0.01, metadata=_help(
        "Largest share of the inputs (a fraction, 0-1) that ingestion may quarantine "
        "before it stops the run."
    ))
    beam_runner: str = field(default="DataflowRunner", metadata=_help(
        "Beam runner of ImageExampleGen, StatisticsGen, Transform and the Evaluator: "
        "DataflowRunner, or DirectRunner (in the task's own process, one worker)."
    ))
    preset: str = field(default="paper", metadata=_help(
        "Training preset: paper, demo, tiny, or finetune (needs init_from)."
    ))
    init_from: str | None = field(default=None, metadata=_help(
        "gs:// serving folder (or SavedModel folder) of an earlier model of the same "
        "preset, e.g. marco import-released's output copied to a bucket: training starts "
        "from its weights, and it is the baseline a new model must beat until the "
        "pipeline has pushed one."
    ))
    dataflow_machine_type: str = field(default="n1-standard-4", metadata=_help(
        "Machine type of the Dataflow workers."
    ))
    dataflow_max_workers: int = field(default=10, metadata=_help(
        "Most Dataflow workers per Beam job."
    ))
    training_machine_type: str = field(default="n1-standard-16", metadata=_help(
        "Machine type of each Vertex AI training replica."
    ))
    accelerator_type: str | None = field(default=None, metadata=_help(
        f"GPU of each training replica, one of {', '.join(ACCELERATOR_MACHINES)} "
        "(unset: CPU only)."
    ))
    accelerator_count: int = field(default=1, metadata=_help("GPUs per training replica."))
    training_workers: int = field(default=1, metadata=_help(
        "Training replicas (machines): one chief and training_workers - 1 workers."
    ))
    service_account: str | None = field(default=None, metadata=_help(
        "Service account email of Dataflow workers and training jobs (default: the "
        "project's default accounts)."
    ))
    serving_dir: str | None = field(default=None, metadata=_help(
        "gs:// folder for pushed models (default: <pipeline_root>/serving)."
    ))
    endpoint_name: str | None = field(default=None, metadata=_help(
        "Also deploy blessed models to this Vertex AI endpoint (created if absent)."
    ))
    endpoint_machine_type: str = field(default="n1-standard-4", metadata=_help(
        "Machine type serving the endpoint."
    ))
    endpoint_serving_image: str | None = field(default=None, metadata=_help(
        "Serving container of the endpoint (default: Vertex AI's prebuilt TensorFlow "
        "2.15 CPU image)."
    ))
    enable_cache: bool = field(default=True, metadata=_help(
        "Reuse results of unchanged components."
    ))

    @property
    def replicas(self) -> int:
        """Replicas in sync: every GPU of every training machine (or each machine's CPU)."""
        per_machine = self.accelerator_count if self.accelerator_type else 1
        return self.training_workers * per_machine

    @property
    def train_steps(self) -> int:
        """The preset's schedule in steps of the global batch (see Preset.train_steps_for)."""
        from pipeline.config import PRESETS

        return PRESETS[self.preset].train_steps_for(self.replicas)

    @property
    def serving_root(self) -> str:
        """The Pusher's folder: ``serving_dir``, or ``<pipeline_root>/serving``."""
        return self.serving_dir or f"{self.pipeline_root.rstrip('/')}/serving"

    @property
    def serving_image(self) -> str:
        """The endpoint's serving container: the setting, or the prebuilt one nearest."""
        if self.endpoint_serving_image:
            return self.endpoint_serving_image
        location = self.region.split("-", 1)[0]
        return SERVING_IMAGE.format(location=location if location in ("europe", "asia") else "us")

    def beam_args(self) -> tuple[str, ...]:
        """Beam arguments that send every Beam component to Dataflow, in this image.

        With ``beam_runner: DirectRunner`` the Beam work stays in the component's own
        process, on two threads (so that outputs come in several files, as on
        Dataflow), and no Dataflow option is given.
        """
        if self.beam_runner == "DirectRunner":
            return DIRECT_BEAM_ARGS
        args = [
            "--runner=DataflowRunner",
            f"--project={self.project}",
            f"--region={self.region}",
            f"--temp_location={self.pipeline_root.rstrip('/')}/tmp",
            f"--machine_type={self.dataflow_machine_type}",
            f"--max_num_workers={self.dataflow_max_workers}",
            f"--sdk_container_image={self.image}",
            "--experiments=use_runner_v2",
        ]
        if self.service_account:
            args.append(f"--service_account_email={self.service_account}")
        return tuple(args)

    def training_job(self) -> dict[str, Any]:
        """The Vertex AI CustomJob the Trainer submits: a chief pool and a worker pool.

        Every replica runs this image with TFX's executor entry point; Vertex AI gives
        each a ``TF_CONFIG`` naming the cluster, from which the trainer builds its
        multi-worker strategy (``components.trainer.train.choose_strategy``).
        """
        machine_spec: dict[str, Any] = {"machine_type": self.training_machine_type}
        if self.accelerator_type:
            machine_spec["accelerator_type"] = self.accelerator_type
            machine_spec["accelerator_count"] = self.accelerator_count

        def pool(replicas: int) -> dict[str, Any]:
            return {
                "machine_spec": dict(machine_spec),
                "replica_count": replicas,
                "container_spec": {"image_uri": self.image},
            }

        job_spec: dict[str, Any] = {"worker_pool_specs": [pool(1)]}
        if self.training_workers > 1:
            job_spec["worker_pool_specs"].append(pool(self.training_workers - 1))
            # A lost replica stalls the others' collectives: restart them all, and the
            # trainer resumes from its last preemption checkpoint.
            job_spec["scheduling"] = {"restart_job_on_worker_restart": True}
        if self.service_account:
            job_spec["service_account"] = self.service_account
        return {"project": self.project, "job_spec": job_spec}


SETTING_FIELDS: Mapping[str, dataclasses.Field] = {
    f.name: f for f in dataclasses.fields(ClusterSettings)
}
REQUIRED_SETTINGS = tuple(
    name for name, f in SETTING_FIELDS.items() if f.default is dataclasses.MISSING
)
# Field type names as written in the class (annotations are strings here).
_INT_SETTINGS = tuple(n for n, f in SETTING_FIELDS.items() if f.type == "int")
_BOOL_SETTINGS = tuple(n for n, f in SETTING_FIELDS.items() if f.type == "bool")
_FRACTION_SETTINGS = tuple(n for n, f in SETTING_FIELDS.items() if f.type == "float")
_OPTIONAL_SETTINGS = tuple(n for n, f in SETTING_FIELDS.items() if "None" in str(f.type))


def _check_accelerator(data: Mapping[str, Any], fail) -> None:
    accelerator = data.get("accelerator_type")
    count = data.get("accelerator_count", 1)
    machine = data.get("training_machine_type", SETTING_FIELDS["training_machine_type"].default)
    if accelerator is None:
        return
    if accelerator in RETIRED_ACCELERATORS:
        fail("accelerator_type", f"{accelerator} {RETIRED_ACCELERATORS[accelerator]}")
    if accelerator not in ACCELERATOR_MACHINES:
        fail("accelerator_type", f"{accelerator!r} is not a Vertex AI GPU; one of "
             f"{', '.join(ACCELERATOR_MACHINES)} (or none for CPU only)")
    families = ACCELERATOR_MACHINES[accelerator]
    if not machine.startswith(families):
        fail("training_machine_type", f"{machine} cannot carry {accelerator}; use a "
             f"{' or '.join(f + '*' for f in families)} machine")
    fixed = re.search(r"-(\d+)g$", machine)
    if machine.startswith("n1-") and count not in N1_GPU_COUNTS:
        fail("accelerator_count", f"an n1 machine takes {N1_GPU_COUNTS} GPUs, got {count}")
    elif fixed and count != int(fixed.group(1)):
        fail("accelerator_count", f"{machine} has {fixed.group(1)} GPU(s), got {count}")
    elif machine.startswith("g2-standard-"):
        size = int(machine.rsplit("-", 1)[1]) if machine.rsplit("-", 1)[1].isdigit() else 0
        if G2_GPUS.get(size) != count:
            fail("accelerator_count", f"{machine} has {G2_GPUS.get(size, '?')} GPU(s), "
                 f"got {count}")


def parse_settings(data: Mapping[str, Any], source: str = "settings") -> ClusterSettings:
    """Checks a settings mapping field by field.

    Raises:
        SettingsError: naming the source (file) and the field.
    """
    from pipeline.config import PRESETS

    def fail(name: str, message: str):
        raise SettingsError(f"{source}: {name}: {message}")

    if not isinstance(data, Mapping):
        raise SettingsError(f"{source}: must be a mapping of settings")
    unknown = sorted(set(data) - set(SETTING_FIELDS))
    if unknown:
        fail(unknown[0], f"unknown setting (known: {', '.join(SETTING_FIELDS)})")
    for name in REQUIRED_SETTINGS:
        if data.get(name) in (None, ""):
            fail(name, "missing required setting")
    for name, value in data.items():
        if value is None:
            if name not in _OPTIONAL_SETTINGS:
                fail(name, "must be set (it has no empty value)")
        elif name in _INT_SETTINGS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, f"must be a positive integer, got {value!r}")
        elif name in _BOOL_SETTINGS:
            if not isinstance(value, bool):
                fail(name, f"must be true or false, got {value!r}")
        elif name in _FRACTION_SETTINGS:
            fraction = _fraction(value)
            if fraction is None:
                fail(name, f"must be a fraction between 0 and 1, got {value!r}")
            data = {**data, name: fraction}
        elif not isinstance(value, str) or not value.strip() or value != value.strip():
            fail(name, f"must be a non-empty string without surrounding spaces, got {value!r}")
    if not _PROJECT.match(data["project"]):
        fail("project", f"{data['project']!r} is not a Google Cloud project id")
    if not _REGION.match(data["region"]):
        fail("region", f"{data['region']!r} is not a Google Cloud region (e.g. europe-west4)")
    runner = data.get("beam_runner", SETTING_FIELDS["beam_runner"].default)
    if runner not in BEAM_RUNNERS:
        fail("beam_runner", f"{runner!r} is not one of {', '.join(BEAM_RUNNERS)}")
    for name in PATH_SETTINGS:
        value = data.get(name)
        if not value:
            continue
        problem = path_problem(value)
        if problem:
            fail(name, problem)
        if runner == "DataflowRunner" and name in CLOUD_PATH_SETTINGS and value.startswith("/"):
            fail(name, f"must be a gs:// path with beam_runner DataflowRunner (Dataflow "
                 f"workers and Vertex AI cannot read this machine's disk), got {value!r}; "
                 "local paths are for beam_runner DirectRunner")
    if not data.get("data_dir") and not data.get("marco_shards"):
        fail("data_dir", NO_DATA_SOURCE)
    if any(c.isspace() for c in data["image"]) or "/" not in data["image"]:
        fail("image", f"{data['image']!r} is not a container image reference")
    preset = data.get("preset", "paper")
    if preset not in PRESETS:
        fail("preset", f"{preset!r} is not one of {', '.join(PRESETS)}")
    if PRESETS[preset].training.trainable_layers and not data.get("init_from"):
        fail("init_from", f"preset {preset} fine-tunes an earlier model: set init_from to "
             "its serving folder")
    for name in ("dataflow_machine_type", "training_machine_type", "endpoint_machine_type"):
        value = data.get(name)
        if value and not _MACHINE.match(value):
            fail(name, f"{value!r} is not a Compute Engine machine type")
    if data.get("service_account") and not _EMAIL.match(data["service_account"]):
        fail("service_account", f"{data['service_account']!r} is not a service account email")
    _check_accelerator(data, fail)
    return ClusterSettings(**dict(data))


def _fraction(value: Any) -> float | None:
    """``value`` as a number within 0-1 (a flag gives it as text), or None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 <= number <= 1.0 else None


def path_problem(value: str) -> str | None:
    """Why ``value`` is not a gs:// path or an absolute local path (None when it is)."""
    if value.startswith("gs://") and len(value) > len("gs://"):
        return None
    if value.startswith("/") and not value.startswith("//"):
        return None
    return f"must be a gs:// path or an absolute local path, got {value!r}"


def has_digest(image: str) -> bool:
    """True when ``image`` names an immutable image: NAME@sha256:<64 hex digits>."""
    return bool(_IMAGE_DIGEST.match(image))


def require_digest(image: str, source: str = "settings") -> None:
    """Refuses an image named by tag only.

    Raises:
        SettingsError: naming the source and the ``image`` field, with how to get
            the digest.
    """
    if has_digest(image):
        return
    raise SettingsError(
        f"{source}: image: {image!r} names no digest. A tag can move between the start "
        "of a run's pods, Dataflow workers and training replicas, so the compiled job "
        "names one immutable image, NAME@sha256:<64 hex digits>. Get the digest of a "
        f"pushed tag with `gcloud artifacts docker images describe {image} "
        "--format='value(image_summary.digest)'` and set image to "
        f"{image_repository(image)}@<digest>, or pass --resolve-image to look it up in "
        "the registry (the TFX CLI's --build-image puts the pushed digest in itself)."
    )


def image_repository(image: str) -> str:
    """The image's name without tag or digest: ``host/path/name``."""
    name = image.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[:colon] if colon > slash else name


def settings_source(path: str | Path | None, overrides: Mapping[str, Any] | None) -> str:
    """How settings messages name where the settings came from."""
    if path is None:
        return "flags" if overrides else "settings"
    return f"{path} with command-line overrides" if overrides else str(path)


def load_settings(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> ClusterSettings:
    """Reads a settings YAML file (or none), applies ``overrides`` and checks the result."""
    data: dict[str, Any] = {}
    source = settings_source(path, overrides)
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, Mapping):
            raise SettingsError(f"{path}: must be a mapping of settings")
        data.update(loaded or {})
    if overrides:
        data.update(overrides)
    return parse_settings(data, source)


def runtime_parameters(settings: ClusterSettings) -> dict[str, str]:
    """The pipeline's runtime parameters and their defaults (from the settings).

    ``input_fingerprint`` and ``served_version`` default to "": a run started without
    them (by ``tfx run create`` or the console) caches ImageExampleGen and the
    baseline as if nothing had changed. :func:`kubeflow.submit.submission_parameters`
    fills them.
    """
    defaults = {TRAIN_ARGS_PARAMETER: json.dumps({"num_steps": settings.train_steps})}
    if settings.data_dir:
        defaults[DATA_DIR_PARAMETER] = settings.data_dir
    if settings.marco_shards:
        defaults[MARCO_SHARDS_PARAMETER] = settings.marco_shards
    defaults[INPUT_FINGERPRINT_PARAMETER] = ""
    defaults[SERVED_VERSION_PARAMETER] = ""
    return defaults


def declared_parameters(job: Mapping[str, Any]) -> dict[str, str]:
    """Name -> type of each runtime parameter a compiled job (or bare spec) declares."""
    spec = job.get("pipelineSpec", job)
    parameters = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: definition.get("parameterType", "") for name, definition in parameters.items()}


def _parameter(defaults: Mapping[str, str], name: str, description: str):
    from tfx import v1 as tfx

    if name not in defaults:
        return None
    return tfx.dsl.experimental.RuntimeParameter(
        name=name, ptype=str, default=defaults[name], description=description
    )


def vertex_placement(settings: ClusterSettings):
    """Trainer on a Vertex AI training job; a Vertex AI endpoint pusher when asked for."""
    from tfx import v1 as tfx

    from components.pusher import EndpointPusher
    from pipeline.pipeline import Placement

    cloud = tfx.extensions.google_cloud_ai_platform
    trainer_config = {
        cloud.ENABLE_VERTEX_KEY: True,
        cloud.VERTEX_REGION_KEY: settings.region,
        cloud.TRAINING_ARGS_KEY: settings.training_job(),
    }
    if not settings.endpoint_name:
        return Placement(trainer_component=cloud.Trainer, trainer_custom_config=trainer_config)
    pusher_config = {
        cloud.ENABLE_VERTEX_KEY: True,
        cloud.VERTEX_REGION_KEY: settings.region,
        cloud.VERTEX_CONTAINER_IMAGE_URI_KEY: settings.serving_image,
        cloud.SERVING_ARGS_KEY: {
            "project_id": settings.project,
            "endpoint_name": settings.endpoint_name,
            "machine_type": settings.endpoint_machine_type,
        },
    }
    return Placement(
        trainer_component=cloud.Trainer,
        trainer_custom_config=trainer_config,
        endpoint_pusher_component=EndpointPusher,
        endpoint_pusher_custom_config=pusher_config,
    )


def build(settings: ClusterSettings):
    """The MARCO pipeline object for these settings (no metadata config: the cluster's)."""
    from pipeline.config import PRESETS, PipelineConfig
    from pipeline.pipeline import create_pipeline

    root = settings.pipeline_root.rstrip("/")
    defaults = runtime_parameters(settings)
    config = PipelineConfig(
        pipeline_root=settings.pipeline_root,
        preset=PRESETS[settings.preset],
        data_dir=_parameter(
            defaults, DATA_DIR_PARAMETER, "gs:// folder of the institutions' data."
        ),
        marco_shards=_parameter(
            defaults, MARCO_SHARDS_PARAMETER, "gs:// glob of published MARCO TFRecord shards."
        ),
        catalogue_dir=settings.catalogue_dir,
        input_fingerprint=_parameter(
            defaults, INPUT_FINGERPRINT_PARAMETER,
            "Digest of the input files, computed when the run is submitted; part of "
            "ImageExampleGen's cache key.",
        ),
        served_version=_parameter(
            defaults, SERVED_VERSION_PARAMETER,
            "Newest model version in the serving folder when the run is submitted; part "
            "of the served-model baseline's cache key.",
        ),
        # The project's catalogue is validated against the committed schema, inside
        # the image; another catalogue's schema is derived from it (CatalogueSchemaGen).
        schema_file=None if settings.catalogue_dir else CONTAINER_SCHEMA_FILE,
        quarantine_budget=settings.quarantine_budget,
        backup_dir=f"{root}/trainer-backup",
        serving_dir=settings.serving_dir,
        init_from=settings.init_from,
        beam_pipeline_args=settings.beam_args(),
        enable_cache=settings.enable_cache,
        train_args=_parameter(
            defaults, TRAIN_ARGS_PARAMETER,
            "The Trainer's TrainArgs as JSON; num_steps counts steps of the global batch.",
        ),
    )
    return create_pipeline(config, placement=vertex_placement(settings))


def compile_pipeline(
    settings: ClusterSettings, output: str | None = None, *, source: str = "settings"
) -> dict:
    """Compiles to a KFP v2 pipeline job (JSON); writes it to ``output`` when given.

    The job holds the pipeline spec (schema 2.1.0, which Vertex AI and Kubeflow
    Pipelines 2 both read) and a runtime config with the pipeline root and each
    runtime parameter's default, which a run may override.

    Under the TFX CLI, ``tfx pipeline create --build-image`` builds and pushes the
    image inside ``run()`` and puts its digest in the runner's ``default_image``,
    which TFX uses for the component containers only; the pipeline was built with
    the settings' image in the Dataflow arguments and the training job. That image
    is replaced here by the runner's everywhere in the job, so every pod, Dataflow
    worker and training replica runs the same build, and the job is written where
    the runner says (the CLI moves it to its own folder).

    Raises:
        SettingsError: the image the job would run has no digest.
    """
    from tfx import v1 as tfx

    runner_config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
        default_image=settings.image, use_pipeline_spec_2_1=True
    )
    out_dir, filename = (
        (str(Path(output).parent), Path(output).name) if output else (None, DEFAULT_OUTPUT)
    )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=runner_config, output_dir=out_dir, output_filename=filename
    )
    job = runner.run(
        build(settings), parameter_values=runtime_parameters(settings), write_out=False
    )
    image = runner.config.default_image
    require_digest(image, source)
    # Defaults only for the parameters some component reads: a run may not set others.
    declared = declared_parameters(job)
    values = job["runtimeConfig"].get("parameterValues", {})
    job["runtimeConfig"]["parameterValues"] = {
        name: value for name, value in values.items() if name in declared
    }
    if image != settings.image:
        job = replace_image(job, settings.image, image)
    images = job_images(job)
    if images != {image}:
        raise RuntimeError(f"compiled job names images {sorted(images)}, not only {image}")
    if output is not None:
        from tfx.dsl.io import fileio

        path = os.path.join(runner._output_dir, runner._output_filename)
        fileio.makedirs(os.path.dirname(path) or ".")
        with fileio.open(path, "w") as handle:
            json.dump(job, handle, sort_keys=True)
    return job


_SDK_IMAGE_FLAG = "--sdk_container_image="
_IMAGE_KEYS = ("image", "image_uri")


def _map_strings(value: Any, visit, key: str | None = None) -> Any:
    """``value`` with ``visit(key, text)`` applied to every string in it.

    Strings that hold JSON objects or lists (a component's ``custom_config``, with
    the training job inside) are decoded, visited and encoded again when they change.
    """
    if isinstance(value, dict):
        return {k: _map_strings(v, visit, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, visit, key) for v in value]
    if not isinstance(value, str):
        return value
    if value[:1] in ("{", "["):
        try:
            inner = json.loads(value)
        except ValueError:
            inner = None
        if isinstance(inner, (dict, list)):
            changed = _map_strings(inner, visit, key)
            return value if changed == inner else json.dumps(changed, sort_keys=True)
    return visit(key, value)


def replace_image(job: Mapping[str, Any], old: str, new: str) -> dict:
    """The job with image ``old`` replaced by ``new`` wherever it is named."""

    def visit(key, text: str) -> str:
        if text == old:
            return new
        if text == _SDK_IMAGE_FLAG + old:
            return _SDK_IMAGE_FLAG + new
        return text

    return _map_strings(dict(job), visit)


def job_images(job: Mapping[str, Any]) -> set[str]:
    """Every image the job runs this project in: containers, Dataflow, training replicas."""
    found: set[str] = set()

    def visit(key, text: str) -> str:
        if key in _IMAGE_KEYS:
            found.add(text)
        elif text.startswith(_SDK_IMAGE_FLAG):
            found.add(text[len(_SDK_IMAGE_FLAG):])
        return text

    _map_strings(dict(job), visit)
    return found


def kubeflow_package(job: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline spec alone, for uploading to Kubeflow Pipelines.

    Kubeflow Pipelines takes a bare spec rather than a job, so each runtime
    parameter's default moves from the job's runtime config into the spec's root
    inputs, where a run started without values finds it, and the job's pipeline root
    becomes the spec's ``defaultPipelineRoot``, so that a run writes there rather than
    to the cluster's default bucket.
    """
    spec = json.loads(json.dumps(job["pipelineSpec"]))
    runtime = job.get("runtimeConfig", {})
    values = runtime.get("parameterValues", {})
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for name, definition in parameters.items():
        if name in values:
            definition["defaultValue"] = values[name]
    spec["defaultPipelineRoot"] = runtime["gcsOutputDirectory"]
    return spec


# --- Tags to digests, through the registry's HTTP API -------------------------------

# Media types a manifest may have; the digest of a multi-platform image is its index's.
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
_CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(ValueError):
    """The registry could not say which digest a tag names; the message says why."""


def _google_registry(host: str) -> bool:
    return host.endswith(".pkg.dev") or host == "gcr.io" or host.endswith(".gcr.io")


def split_image(image: str) -> tuple[str, str, str]:
    """(registry host, repository path, tag) of an image reference; the tag defaults to latest."""
    repository = image_repository(image)
    name = image.split("@", 1)[0]
    tag = name[len(repository) + 1:] if len(name) > len(repository) else "latest"
    host, _, path = repository.partition("/")
    if not path or not ("." in host or ":" in host or host == "localhost"):
        host, path = "registry-1.docker.io", repository
        if "/" not in path:
            path = f"library/{path}"
    elif host == "docker.io":
        host = "registry-1.docker.io"
    return host, path, tag


def resolve_image(image: str, timeout_s: float = 30.0) -> str:
    """``image`` by digest (``host/path/name@sha256:...``), asking its registry for the tag.

    One ``HEAD /v2/<path>/manifests/<tag>`` (Docker Registry HTTP API v2) reads the
    ``Docker-Content-Digest`` header. Artifact Registry (``*.pkg.dev``) and Container
    Registry (``gcr.io``) are asked with the Application Default Credentials; other
    registries anonymously. An image that already has a digest is returned as it is.

    Raises:
        RegistryError: no credentials, no such tag, access refused, or no digest.
    """
    if has_digest(image):
        return image
    import requests

    host, path, tag = split_image(image)
    if _google_registry(host):
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        from google.auth.transport.requests import AuthorizedSession

        try:
            credentials, _ = google.auth.default(scopes=[_CLOUD_PLATFORM_SCOPE])
        except DefaultCredentialsError as exc:
            raise RegistryError(
                f"no Google credentials to ask {host} for {image} ({exc}); run `gcloud "
                "auth application-default login`"
            ) from None
        session = AuthorizedSession(credentials)
    else:
        session = requests.Session()
    from google.auth.exceptions import GoogleAuthError

    url = f"https://{host}/v2/{path}/manifests/{tag}"
    try:
        response = session.head(
            url, headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}, timeout=timeout_s,
            allow_redirects=True,
        )
    except requests.RequestException as exc:
        raise RegistryError(f"cannot reach {host} for {image}: {exc}") from None
    except GoogleAuthError as exc:
        raise RegistryError(
            f"cannot sign in to {host} for {image} ({exc}); run `gcloud auth "
            "application-default login`"
        ) from None
    if response.status_code in (401, 403):
        raise RegistryError(
            f"{host} refused to say what {image} is (HTTP {response.status_code}); the "
            "account of `gcloud auth application-default login` needs Artifact Registry "
            "Reader on the repository"
        )
    if response.status_code == 404:
        raise RegistryError(f"{host} has no tag {tag!r} of {path} (HTTP 404); push it first")
    if response.status_code >= 400:
        raise RegistryError(f"{host} answered HTTP {response.status_code} for {url}")
    digest = response.headers.get("Docker-Content-Digest", "")
    if not _DIGEST.match(digest):
        raise RegistryError(
            f"{host} gave no sha256 Docker-Content-Digest for {image} (got {digest!r})"
        )
    return f"{image_repository(image)}@{digest}"


def main() -> None:
    """Entry point of the TFX CLI: settings from $MARCO_KUBEFLOW_CONFIG or pipeline.yaml."""
    path = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    try:
        settings = load_settings(path)
        compile_pipeline(settings, DEFAULT_OUTPUT, source=str(path))
    except SettingsError as exc:
        sys.exit(f"marco: {exc}")


if __name__ == "__main__":
    main()
