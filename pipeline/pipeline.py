"""The one MARCO graph: every runner (local, Kubeflow V2, Vertex) builds it here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfx import v1 as tfx

from components.anomaly_gate import AnomalyGate
from components.catalogue_schema import CatalogueSchemaGen
from components.ingestion.component import ImageExampleGen
from components.statistics import stats_options
from components.trainer import BACKUP_DIR_KEY, INIT_FROM_KEY
from components.trainer.config import CUSTOM_CONFIG_KEY
from components.transform import CATALOGUE_DIR_CONFIG
from pipeline.config import PipelineConfig
from schemas import SCHEMA_FILE, SOURCES_DIR

PREPROCESSING_FN = "components.transform.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"

# How far the graph goes; each stage includes the ones before it.
STAGES = ("validation", "transform", "training", "push")


# Component id of the optional second pusher (see Placement).
ENDPOINT_PUSHER_ID = "EndpointPusher"


@dataclasses.dataclass(frozen=True)
class Placement:
    """Which component classes run training and pushing, and their extra settings.

    The default trains in the pipeline's own process or pod, and the Pusher writes
    blessed models to the serving directory. A cloud runner swaps in TFX's Google
    Cloud extension Trainer (a Vertex AI training job) with its ``custom_config``, and
    may add an endpoint pusher (TFX's Vertex AI Pusher, which ignores push
    destinations) that deploys the same blessed model to an endpoint as well. The
    rest of the graph is unchanged.
    """

    trainer_component: type = tfx.components.Trainer
    trainer_custom_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    endpoint_pusher_component: type | None = None
    endpoint_pusher_custom_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def derives_schema(config: PipelineConfig) -> bool:
    """True when the run's schema is derived from its catalogue at run time.

    That is a catalogue other than the project's, and no curated schema file given:
    the committed ``schemas/schema.pbtxt`` knows only the project's catalogue.
    """
    if not config.catalogue_dir or config.schema_file:
        return False
    from components import filesystem

    catalogue = config.catalogue_dir
    return filesystem.is_remote(catalogue) or Path(catalogue).resolve() != SOURCES_DIR


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config=None,
    *,
    through: str = "push",
    placement: Placement | None = None,
) -> tfx.dsl.Pipeline:
    """Builds the MARCO pipeline from ``config``.

    Args:
        config: paths, preset and Beam arguments.
        metadata_connection_config: ML Metadata connection (SQLite locally; None on
            Kubeflow, where the cluster provides it).
        through: last stage to include, one of :data:`STAGES` (tests and data checks
            stop early; a real run goes through ``push``).
        placement: where training and pushing run (default: in process).
    """
    if through not in STAGES:
        raise ValueError(f"through must be one of {STAGES}, got {through!r}")
    stop = STAGES.index(through)
    placement = placement or Placement()

    examples = ImageExampleGen(
        config.data_dir,
        catalogue_dir=config.catalogue_dir,
        marco_shards=config.marco_shards,
        eval_percent=config.eval_percent,
        quarantine_budget=config.quarantine_budget,
        input_fingerprint=config.input_fingerprint,
        stop_report_dir=config.stop_reports_root,
    )
    derived = derives_schema(config)
    if derived:
        schema = CatalogueSchemaGen(config.catalogue_dir,
                                    input_fingerprint=config.input_fingerprint)
    else:
        schema = tfx.components.ImportSchemaGen(
            schema_file=config.schema_file or str(SCHEMA_FILE))
    statistics = tfx.components.StatisticsGen(
        examples=examples.outputs["examples"],
        schema=schema.outputs["schema"],
        stats_options=stats_options(),
    )
    validator = tfx.components.ExampleValidator(
        statistics=statistics.outputs["statistics"], schema=schema.outputs["schema"]
    )
    gate = AnomalyGate(
        anomalies=validator.outputs["anomalies"],
        stop_report_dir=config.stop_reports_root,
        catalogue_dir=config.catalogue_dir if derived else None,
    )
    components = [examples, schema, statistics, validator, gate]

    if stop >= STAGES.index("transform"):
        transform_config = (
            {CATALOGUE_DIR_CONFIG: config.catalogue_dir} if config.catalogue_dir else {}
        )
        transform = tfx.components.Transform(
            examples=examples.outputs["examples"],
            schema=schema.outputs["schema"],
            preprocessing_fn=PREPROCESSING_FN,
            custom_config=transform_config,
            disable_statistics=True,
        )
        # Nothing downstream of validation runs on data with anomalies.
        transform.add_upstream_node(gate)
        components.append(transform)

    if stop >= STAGES.index("training"):
        trainer_config = {CUSTOM_CONFIG_KEY: config.preset.training.to_json_dict()}
        if config.backup_dir:
            trainer_config[BACKUP_DIR_KEY] = config.backup_dir
        if config.init_from:
            trainer_config[INIT_FROM_KEY] = config.init_from
        trainer_config.update(placement.trainer_custom_config)
        trainer = placement.trainer_component(
            run_fn=RUN_FN,
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema.outputs["schema"],
            train_args=(
                config.train_args
                if config.train_args is not None
                else tfx.proto.TrainArgs(num_steps=config.preset.train_steps)
            ),
            eval_args=tfx.proto.EvalArgs(num_steps=config.preset.eval_steps),
            custom_config=trainer_config,
        )
        components.append(trainer)

    if stop >= STAGES.index("push"):
        components.extend(_evaluate_and_push(config, examples, trainer, placement))

    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )


def _evaluate_and_push(config: PipelineConfig, examples, trainer, placement: Placement) -> list:
    """The served model as baseline, the TFMA Evaluator and the pusher(s)."""
    from components.baseline.component import ServedModelBaseline
    from components.evaluation import Evaluator, eval_config
    from components.pusher import Pusher

    baseline = ServedModelBaseline(config.serving_root, served_version=config.served_version,
                                   init_from=config.init_from)
    # Read the serving folder once the candidate exists, just before it is evaluated.
    baseline.add_upstream_node(trainer)
    evaluator = Evaluator(
        examples=examples.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        eval_config=eval_config(config.preset.accuracy_floor, config.change_tolerance),
    )
    pusher = Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_root)
        ),
    )
    pushers = [pusher]
    if placement.endpoint_pusher_component is not None:
        from components.pusher import SERVING_DIR_CONFIG

        endpoint = placement.endpoint_pusher_component(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            custom_config={**placement.endpoint_pusher_custom_config,
                           SERVING_DIR_CONFIG: config.serving_root},
        ).with_id(ENDPOINT_PUSHER_ID)
        # It compares with the serving folder as the Pusher found it, so it goes first.
        pusher.add_upstream_node(endpoint)
        pushers.insert(0, endpoint)
    return [baseline, evaluator, *pushers]
