"""Pipeline configuration as data: one frozen dataclass and the named presets.

Runners and the command line build a :class:`PipelineConfig` (from a preset plus
paths) and hand it to :func:`pipeline.pipeline.create_pipeline`; nothing in the
graph builder reads flags or the environment. :data:`PRESETS` is the one table of
presets; this module loads without TensorFlow, so the command line can offer
:data:`PRESET_NAMES` before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from components.names import DEFAULT_EVAL_PERCENT, require_data_source
from components.trainer import config as training

if TYPE_CHECKING:
    from tfx.v1.dsl.experimental import RuntimeParameter
    from tfx.v1.proto import TrainArgs

PIPELINE_NAME = "marco"
FINETUNE_STEPS = 900


@dataclasses.dataclass(frozen=True)
class Preset:
    """What differs between a unit test, a laptop demo and the paper's GPU run."""

    name: str
    training: training.TrainingConfig
    train_steps: int
    eval_steps: int | None
    accuracy_floor: float

    def __post_init__(self) -> None:
        if self.train_steps < 0:
            raise ValueError(f"train_steps must be >= 0, got {self.train_steps}")
        if not 0.0 <= self.accuracy_floor <= 1.0:
            raise ValueError(f"accuracy_floor must be in [0, 1], got {self.accuracy_floor}")

    def train_steps_for(self, replicas: int) -> int:
        """Steps that show the model as many images as ``train_steps`` do on one replica.

        ``train_steps`` counts steps of one replica's batch (the paper's 1.7M steps of
        64); with N replicas in sync each step takes N batches, so N times fewer steps
        keep the schedule's images and epochs.
        """
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        return math.ceil(self.train_steps / replicas)


# accuracy_floor: the smallest overall eval accuracy that blesses a model. The tiny
# preset only proves the plumbing (any model better than chance on 4 classes); the
# demo must learn the synthetic set; the paper reached 94.5% on the MARCO test set.
PRESETS: Mapping[str, Preset] = {
    "tiny": Preset("tiny", training.TINY, train_steps=12, eval_steps=None,
                   accuracy_floor=0.0),
    # The demo's floor tells a model that learned from one that did not: well above
    # the majority class and the brightness-only baseline (both about 50% on the demo's
    # own eval split).
    "demo": Preset("demo", training.DEMO, train_steps=2500, eval_steps=None,
                   accuracy_floor=0.65),
    # The paper trained for about 1.7M steps of 64 images.
    "paper": Preset("paper", training.PAPER, train_steps=1_700_000, eval_steps=None,
                    accuracy_floor=0.9),
    # An earlier paper-preset model (init_from, e.g. the imported released MARCO
    # model) fine-tuned on a lab's own images on 2 CPU cores: steps sized for about
    # 2,000 images in under 30 minutes (benchmarks/finetune_throughput.py). Blessing
    # is against the init model (the Evaluator's baseline until this pipeline has
    # pushed a model); the floor only refuses a broken model.
    "finetune": Preset("finetune", training.FINETUNE, train_steps=FINETUNE_STEPS,
                       eval_steps=None, accuracy_floor=0.25),
}
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything ``create_pipeline`` needs; paths may be local or gs://.

    Attributes:
        pipeline_root: where TFX writes artifacts.
        data_dir: raw institution folders (optional when ``marco_shards`` is set); a
            Kubeflow runner may pass a string runtime parameter instead.
        preset: training and blessing settings.
        marco_shards: glob of published MARCO TFRecord shards to ingest as well (or a
            string runtime parameter).
        catalogue_dir: institution YAML folder (default: the project's). Another
            folder's schema is derived from it when the run starts
            (:class:`components.catalogue_schema.CatalogueSchemaGen`), so a catalogue
            outside the checkout may add institutions.
        schema_file: a curated schema to validate against instead (default: the
            project's schemas/schema.pbtxt with the project's catalogue, the derived
            schema with another).
        eval_percent: share of image ids held out for evaluation.
        quarantine_budget: largest acceptable share of quarantined files.
        stop_report_dir: where a step that stops the run writes its full report (the
            quarantine report, the anomalies), which outlives the failed step; default
            ``<pipeline_root>/stopped-runs``.
        backup_dir: stable folder for the Trainer's preemption checkpoints, so that a
            rerun after a crash resumes rather than restarts.
        serving_dir: where the Pusher writes blessed models, one numbered version
            folder each (TF Serving's layout); default ``<pipeline_root>/serving``.
        change_tolerance: how much less accurate than the served model a new
            model may be and still be blessed.
        beam_pipeline_args: where Beam work runs (DirectRunner, Dataflow, ...).
        enable_cache: reuse results of unchanged components.
        train_args: the Trainer's TrainArgs, or a string runtime parameter holding
            their JSON so that each cloud run can choose its step count; default:
            ``preset.train_steps``.
        input_fingerprint: digest of the input files, part of ImageExampleGen's cache
            key. Locally its driver computes it; on Kubeflow and Vertex, where TFX runs
            no custom drivers, it is a runtime parameter filled when a run is
            submitted (:mod:`kubeflow.submit`).
        served_version: the newest model version in the serving folder, part of the
            served-model baseline's cache key, computed and passed the same way.
        init_from: an earlier model of the same preset to start training from (a
            serving folder, whose newest version is taken, a version folder or a
            SavedModel; local or gs://), e.g. ``marco import-released``'s output. Until
            this pipeline has pushed a model, it is also the Evaluator's baseline, so
            a fine-tuned model is pushed only when it beats it. Presets that freeze
            layers (``finetune``) need it.
    """

    pipeline_root: str
    preset: Preset
    data_dir: str | RuntimeParameter | None = None
    marco_shards: str | RuntimeParameter | None = None
    catalogue_dir: str | None = None
    schema_file: str | None = None
    eval_percent: int = DEFAULT_EVAL_PERCENT
    quarantine_budget: float = 0.01
    stop_report_dir: str | None = None
    backup_dir: str | None = None
    serving_dir: str | None = None
    change_tolerance: float = 0.0
    beam_pipeline_args: tuple[str, ...] = ()
    enable_cache: bool = True
    pipeline_name: str = PIPELINE_NAME
    train_args: TrainArgs | RuntimeParameter | None = None
    input_fingerprint: str | RuntimeParameter | None = None
    served_version: str | RuntimeParameter | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        require_data_source(self.data_dir, self.marco_shards)
        if self.preset.training.trainable_layers and not self.init_from:
            trained = self.preset.training.trainable_layers
            raise ValueError(
                f"the {self.preset.name} preset trains only {trained} and keeps the rest "
                "of the network as it starts: give init_from (marco run --init-from "
                "SERVING_DIR), the model to start from"
            )

    @property
    def serving_root(self) -> str:
        return self.serving_dir or f"{self.pipeline_root.rstrip('/')}/serving"

    @property
    def stop_reports_root(self) -> str:
        """Where steps that stop the run write their full reports."""
        from components.stop_reports import default_dir

        return self.stop_report_dir or default_dir(self.pipeline_root)
