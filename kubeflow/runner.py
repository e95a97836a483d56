"""Compiles the one MARCO graph into a KFP v2 pipeline spec for Kubeflow or Vertex AI.

Used three ways: ``marco compile --config FILE --out pipeline.json``; the TFX CLI
(``tfx pipeline create --engine vertex --pipeline_path kubeflow/runner.py``), which
runs this file as a script (the settings file then comes from ``$MARCO_KUBEFLOW_CONFIG``
or ``kubeflow/pipeline.yaml``); and uploading the JSON to a Kubeflow Pipelines
cluster. Only configuration differs from a local run: the graph is
:func:`pipeline.pipeline.create_pipeline`, never a copy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

import components  # noqa: F401  (Keras 2 before TensorFlow)

CONFIG_ENV = "MARCO_KUBEFLOW_CONFIG"
DEFAULT_CONFIG = Path(__file__).with_name("pipeline.yaml")
DEFAULT_OUTPUT = "marco_pipeline.json"


class SettingsError(ValueError):
    """A cluster setting is missing or wrong; the message names the field."""


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """Where the pipeline runs; read from one YAML file.

    Attributes:
        project: Google Cloud project id.
        region: region of Vertex AI and Dataflow, e.g. ``europe-west4``.
        pipeline_root: ``gs://`` folder for artifacts.
        image: container image with TFX 1.16 and this project installed.
        data_dir: ``gs://`` folder of institution data, and/or ``marco_shards``.
        marco_shards: ``gs://`` glob of published MARCO TFRecord shards.
        preset: ``paper`` (default), ``demo`` or ``tiny``.
        dataflow_machine_type: Dataflow worker machine type for the Beam components.
        dataflow_max_workers: most Dataflow workers.
    """

    project: str
    region: str
    pipeline_root: str
    image: str
    data_dir: str | None = None
    marco_shards: str | None = None
    preset: str = "paper"
    dataflow_machine_type: str = "n1-standard-4"
    dataflow_max_workers: int = 10

    def beam_args(self) -> tuple[str, ...]:
        """Beam arguments that send every Beam component to Dataflow."""
        return (
            "--runner=DataflowRunner",
            f"--project={self.project}",
            f"--region={self.region}",
            f"--temp_location={self.pipeline_root.rstrip('/')}/tmp",
            f"--machine_type={self.dataflow_machine_type}",
            f"--max_num_workers={self.dataflow_max_workers}",
            f"--sdk_container_image={self.image}",
            "--experiments=use_runner_v2",
        )


def parse_settings(data: Mapping[str, Any], source: str = "settings") -> ClusterSettings:
    """Checks a settings mapping field by field.

    Raises:
        SettingsError: naming the file and the field.
    """
    from pipeline.config import PRESETS

    if not isinstance(data, Mapping):
        raise SettingsError(f"{source}: must be a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(ClusterSettings)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SettingsError(f"{source}: {unknown[0]}: unknown setting (known: {sorted(fields)})")
    required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
    for name in required:
        if not data.get(name):
            raise SettingsError(f"{source}: {name}: missing required setting")
    for name in ("pipeline_root", "data_dir", "marco_shards"):
        value = data.get(name)
        if value and not str(value).startswith("gs://"):
            raise SettingsError(f"{source}: {name}: must be a gs:// path, got {value!r}")
    if not data.get("data_dir") and not data.get("marco_shards"):
        raise SettingsError(f"{source}: data_dir: set data_dir, marco_shards or both")
    preset = data.get("preset", "paper")
    if preset not in PRESETS:
        raise SettingsError(f"{source}: preset: {preset!r} is not one of {sorted(PRESETS)}")
    workers = data.get("dataflow_max_workers", 10)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise SettingsError(f"{source}: dataflow_max_workers: must be a positive integer")
    return ClusterSettings(**dict(data))


def load_settings(path: str | Path) -> ClusterSettings:
    """Reads and checks a settings YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    return parse_settings(data or {}, str(path))


def build(settings: ClusterSettings):
    """The MARCO pipeline object for these settings (no metadata config: the cluster's)."""
    from pipeline.config import PRESETS, PipelineConfig
    from pipeline.pipeline import create_pipeline

    config = PipelineConfig(
        pipeline_root=settings.pipeline_root,
        preset=PRESETS[settings.preset],
        data_dir=settings.data_dir,
        marco_shards=settings.marco_shards,
        backup_dir=f"{settings.pipeline_root.rstrip('/')}/trainer-backup",
        beam_pipeline_args=settings.beam_args(),
    )
    return create_pipeline(config)


def compile_pipeline(settings: ClusterSettings, output: str | None = None) -> dict:
    """Compiles to a KFP v2 pipeline spec; writes it to ``output`` when given."""
    from tfx import v1 as tfx

    runner_config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
        default_image=settings.image
    )
    out_dir, filename = (
        (str(Path(output).parent), Path(output).name) if output else (None, DEFAULT_OUTPUT)
    )
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=runner_config, output_dir=out_dir, output_filename=filename
    )
    return runner.run(build(settings), write_out=output is not None)


def main() -> None:
    """Entry point of the TFX CLI: settings from $MARCO_KUBEFLOW_CONFIG or pipeline.yaml."""
    settings = load_settings(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    compile_pipeline(settings, DEFAULT_OUTPUT)


if __name__ == "__main__":
    main()
