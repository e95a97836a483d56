"""Compiles the one MARCO graph into a KFP v2 pipeline spec for Kubeflow or Vertex AI.

Used three ways: ``marco compile --config FILE --out pipeline.json`` (flags may
override any setting); the TFX CLI (``tfx pipeline create --engine vertex
--pipeline_path kubeflow/runner.py``), which runs this file as a script (the settings
file then comes from ``$MARCO_KUBEFLOW_CONFIG`` or ``kubeflow/pipeline.yaml``); and
uploading the JSON to a Kubeflow Pipelines cluster. Only configuration differs from a
local run: the graph is :func:`pipeline.pipeline.create_pipeline`, never a copy. Here
it gets Dataflow for its Beam components, a Vertex AI training job on a GPU worker
pool for the Trainer, an optional Vertex AI endpoint beside the serving directory,
and runtime parameters for what changes from run to run (the data and the number of
training steps).
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
    pipeline_root: str = field(metadata=_help("gs:// folder for the pipeline's artifacts."))
    image: str = field(metadata=_help(
        "Container image with TFX 1.16 and this project (built from ./Dockerfile)."
    ))
    data_dir: str | None = field(default=None, metadata=_help(
        "gs:// folder of the institutions' raw data (default of runtime parameter data_dir)."
    ))
    marco_shards: str | None = field(default=None, metadata=_help(
        "gs:// glob of published MARCO TFRecord shards (default of runtime parameter "
        "marco_shards)."
    ))
    preset: str = field(default="paper", metadata=_help("Training preset: paper, demo or tiny."))
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
    def serving_image(self) -> str:
        """The endpoint's serving container: the setting, or the prebuilt one nearest."""
        if self.endpoint_serving_image:
            return self.endpoint_serving_image
        location = self.region.split("-", 1)[0]
        return SERVING_IMAGE.format(location=location if location in ("europe", "asia") else "us")

    def beam_args(self) -> tuple[str, ...]:
        """Beam arguments that send every Beam component to Dataflow, in this image."""
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
        elif not isinstance(value, str) or not value.strip() or value != value.strip():
            fail(name, f"must be a non-empty string without surrounding spaces, got {value!r}")
    if not _PROJECT.match(data["project"]):
        fail("project", f"{data['project']!r} is not a Google Cloud project id")
    if not _REGION.match(data["region"]):
        fail("region", f"{data['region']!r} is not a Google Cloud region (e.g. europe-west4)")
    for name in ("pipeline_root", "data_dir", "marco_shards", "serving_dir"):
        value = data.get(name)
        if value and not (value.startswith("gs://") and len(value) > len("gs://")):
            fail(name, f"must be a gs:// path, got {value!r}")
    if not data.get("data_dir") and not data.get("marco_shards"):
        fail("data_dir", "set data_dir, marco_shards or both")
    if any(c.isspace() for c in data["image"]) or "/" not in data["image"]:
        fail("image", f"{data['image']!r} is not a container image reference")
    preset = data.get("preset", "paper")
    if preset not in PRESETS:
        fail("preset", f"{preset!r} is not one of {', '.join(PRESETS)}")
    for name in ("dataflow_machine_type", "training_machine_type", "endpoint_machine_type"):
        value = data.get(name)
        if value and not _MACHINE.match(value):
            fail(name, f"{value!r} is not a Compute Engine machine type")
    if data.get("service_account") and not _EMAIL.match(data["service_account"]):
        fail("service_account", f"{data['service_account']!r} is not a service account email")
    _check_accelerator(data, fail)
    return ClusterSettings(**dict(data))


def load_settings(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> ClusterSettings:
    """Reads a settings YAML file (or none), applies ``overrides`` and checks the result."""
    data: dict[str, Any] = {}
    source = "settings"
    if path is not None:
        path = Path(path)
        source = str(path)
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
        source = f"{source} with command-line overrides" if path is not None else "flags"
    return parse_settings(data, source)


def runtime_parameters(settings: ClusterSettings) -> dict[str, str]:
    """The pipeline's runtime parameters and their defaults (from the settings)."""
    defaults = {TRAIN_ARGS_PARAMETER: json.dumps({"num_steps": settings.train_steps})}
    if settings.data_dir:
        defaults[DATA_DIR_PARAMETER] = settings.data_dir
    if settings.marco_shards:
        defaults[MARCO_SHARDS_PARAMETER] = settings.marco_shards
    return defaults


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
        endpoint_pusher_component=cloud.Pusher,
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
        schema_file=CONTAINER_SCHEMA_FILE,
        backup_dir=f"{root}/trainer-backup",
        serving_dir=settings.serving_dir,
        beam_pipeline_args=settings.beam_args(),
        enable_cache=settings.enable_cache,
        train_args=_parameter(
            defaults, TRAIN_ARGS_PARAMETER,
            "The Trainer's TrainArgs as JSON; num_steps counts steps of the global batch.",
        ),
    )
    return create_pipeline(config, placement=vertex_placement(settings))


def compile_pipeline(settings: ClusterSettings, output: str | None = None) -> dict:
    """Compiles to a KFP v2 pipeline job (JSON); writes it to ``output`` when given.

    The job holds the pipeline spec (schema 2.1.0, which Vertex AI and Kubeflow
    Pipelines 2 both read) and a runtime config with the pipeline root and each
    runtime parameter's default, which a run may override.
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
    return runner.run(
        build(settings),
        parameter_values=runtime_parameters(settings),
        write_out=output is not None,
    )


def kubeflow_package(job: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline spec alone, for uploading to Kubeflow Pipelines.

    Kubeflow Pipelines takes a bare spec rather than a job, so each runtime
    parameter's default moves from the job's runtime config into the spec's root
    inputs, where a run started without values finds it.
    """
    spec = json.loads(json.dumps(job["pipelineSpec"]))
    values = job.get("runtimeConfig", {}).get("parameterValues", {})
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for name, definition in parameters.items():
        if name in values:
            definition["defaultValue"] = values[name]
    return spec


def main() -> None:
    """Entry point of the TFX CLI: settings from $MARCO_KUBEFLOW_CONFIG or pipeline.yaml."""
    path = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    try:
        settings = load_settings(path)
    except SettingsError as exc:
        sys.exit(f"marco: {exc}")
    compile_pipeline(settings, DEFAULT_OUTPUT)


if __name__ == "__main__":
    main()
