"""The one MARCO graph: every runner (local, Kubeflow V2, Vertex) builds it here."""

from __future__ import annotations

from tfx import v1 as tfx

from components.anomaly_gate import AnomalyGate
from components.ingestion.component import ImageExampleGen
from components.statistics import stats_options
from components.trainer import BACKUP_DIR_KEY
from components.trainer.config import CUSTOM_CONFIG_KEY
from components.transform import CATALOGUE_DIR_CONFIG
from pipeline.config import PipelineConfig
from schemas import SCHEMA_FILE

PREPROCESSING_FN = "components.transform.preprocessing_fn"
RUN_FN = "components.trainer.run_fn"


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config=None,
) -> tfx.dsl.Pipeline:
    """Builds ingestion, validation, label collapse and training from ``config``.

    Args:
        config: paths, preset and Beam arguments.
        metadata_connection_config: ML Metadata connection (SQLite locally; None on
            Kubeflow, where the cluster provides it).
    """
    examples = ImageExampleGen(
        config.data_dir,
        catalogue_dir=config.catalogue_dir,
        marco_shards=config.marco_shards,
        eval_percent=config.eval_percent,
        quarantine_budget=config.quarantine_budget,
    )
    schema = tfx.components.ImportSchemaGen(schema_file=config.schema_file or str(SCHEMA_FILE))
    statistics = tfx.components.StatisticsGen(
        examples=examples.outputs["examples"],
        schema=schema.outputs["schema"],
        stats_options=stats_options(),
    )
    validator = tfx.components.ExampleValidator(
        statistics=statistics.outputs["statistics"], schema=schema.outputs["schema"]
    )
    gate = AnomalyGate(anomalies=validator.outputs["anomalies"])
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
    trainer_config = {CUSTOM_CONFIG_KEY: config.preset.training.to_json_dict()}
    if config.backup_dir:
        trainer_config[BACKUP_DIR_KEY] = config.backup_dir
    trainer = tfx.components.Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=config.preset.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=config.preset.eval_steps),
        custom_config=trainer_config,
    )
    components = [examples, schema, statistics, validator, gate, transform, trainer]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components,
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
