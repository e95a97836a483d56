"""Executor of ImageExampleGen: unpacks the artifact, runs the Beam stages, records counts."""

from __future__ import annotations

import json
import logging

from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components import imagecheck, stop_reports
from components.catalogue import load_catalogue
from components.catalogue_schema import local_catalogue
from components.ingestion import beam_stages, report
from components.names import DEFAULT_EVAL_PERCENT
from components.tfx_types import Artifacts, Properties

EXAMPLES_KEY = "examples"
DATA_DIR_KEY = "data_dir"
CATALOGUE_DIR_KEY = "catalogue_dir"
MARCO_SHARDS_KEY = "marco_shards"
INSTITUTIONS_KEY = "institutions"
EVAL_PERCENT_KEY = "eval_percent"
QUARANTINE_BUDGET_KEY = "quarantine_budget"
MAX_PIXELS_KEY = "max_pixels"
# Folder for what must outlive a failed run: the full quarantine report when the
# budget stops it (TFX removes the failed step's own output folder).
STOP_REPORT_DIR_KEY = "stop_report_dir"

# Custom properties of the Examples artifact (JSON objects are stored as strings so
# that every MLMD client, and the Kubeflow UI, shows them as they are).
NUM_EXAMPLES_PROPERTY = "num_examples"
NUM_QUARANTINED_PROPERTY = "num_quarantined"
PER_INSTITUTION_PROPERTY = "examples_per_institution"
PER_LABEL_PROPERTY = "examples_per_native_label"
PER_SPLIT_PROPERTY = "examples_per_split"
PER_REASON_PROPERTY = "quarantined_per_reason"
QUARANTINED_PER_INSTITUTION_PROPERTY = "quarantined_per_institution"
QUARANTINE_PATTERN_PROPERTY = "quarantine_pattern"
# Execution parameter with the digest of the input files (see driver.py).
FINGERPRINT_KEY = "input_fingerprint"

_LOG = logging.getLogger(__name__)


def _json(counter) -> str:
    return json.dumps(dict(sorted(counter.items())), sort_keys=True)


def record_summary(artifact: types.Artifact, summary: report.IngestionSummary) -> None:
    """Put the run's counts on the Examples artifact as custom properties."""
    artifact.set_int_custom_property(NUM_EXAMPLES_PROPERTY, summary.examples)
    artifact.set_int_custom_property(NUM_QUARANTINED_PROPERTY, summary.quarantined)
    artifact.set_string_custom_property(PER_INSTITUTION_PROPERTY, _json(summary.per_institution))
    artifact.set_string_custom_property(PER_LABEL_PROPERTY, _json(summary.per_label))
    artifact.set_string_custom_property(PER_SPLIT_PROPERTY, _json(summary.per_split))
    artifact.set_string_custom_property(PER_REASON_PROPERTY, _json(summary.per_reason))
    artifact.set_string_custom_property(
        QUARANTINED_PER_INSTITUTION_PROPERTY, _json(summary.quarantined_per_institution)
    )
    artifact.set_string_custom_property(
        QUARANTINE_PATTERN_PROPERTY,
        f"{artifact.uri}/{beam_stages.QUARANTINE_DIR}/{beam_stages.QUARANTINE_PREFIX}-*.csv",
    )


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs the ingestion Beam pipeline on the runner chosen by beam_pipeline_args."""

    def Do(self, input_dict: Artifacts, output_dict: Artifacts,
           exec_properties: Properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        if not exec_properties.get(FINGERPRINT_KEY):
            # Only where no driver ran (Kubeflow, Vertex) and the run was started
            # without the parameter: the cache cannot tell new data from old.
            _LOG.warning(
                "ImageExampleGen: runtime parameter %s is empty, so a later run over "
                "changed data may reuse this run's cached results; start runs with "
                "`marco submit`, which fills it in (docs/platform.md)", FINGERPRINT_KEY,
            )
        # A catalogue in a bucket is read from a local copy for as long as the step runs.
        with local_catalogue(exec_properties.get(CATALOGUE_DIR_KEY) or None) as folder:
            self._ingest(load_catalogue(folder), output_dict, exec_properties)

    def _ingest(self, catalogue, output_dict: Artifacts,
                exec_properties: Properties) -> None:
        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        institutions = json.loads(exec_properties.get(INSTITUTIONS_KEY) or "null")
        config = beam_stages.IngestionConfig(
            catalogue=catalogue,
            data_dir=exec_properties.get(DATA_DIR_KEY) or None,
            eval_percent=int(exec_properties.get(EVAL_PERCENT_KEY, DEFAULT_EVAL_PERCENT)),
            max_pixels=int(
                exec_properties.get(MAX_PIXELS_KEY) or imagecheck.DEFAULT_MAX_PIXELS
            ),
        )
        budget = float(exec_properties.get(QUARANTINE_BUDGET_KEY, report.DEFAULT_QUARANTINE_BUDGET))
        units = beam_stages.list_work_units(
            catalogue,
            config.data_dir,
            exec_properties.get(MARCO_SHARDS_KEY) or None,
            institutions,
        )
        _LOG.info("ImageExampleGen: %d units to read into %s", len(units), examples.uri)

        with self._make_beam_pipeline() as pipeline:
            _ = (
                pipeline
                | "IngestImages" >> beam_stages.IngestImages(config, units)
                | "WriteIngestion" >> beam_stages.WriteIngestion(examples.uri)
            )

        examples.split_names = artifact_utils.encode_split_names(list(beam_stages.SPLITS))
        examples.span = 0
        examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        summary = report.read_summary(examples.uri)
        record_summary(examples, summary)
        _LOG.info(
            "ImageExampleGen: %d examples %s, %d quarantined %s",
            summary.examples, dict(summary.per_split), summary.quarantined,
            dict(summary.per_reason),
        )
        run_id = self._context.pipeline_run_id if self._context else None
        report.check_budget(
            summary, budget, examples.uri,
            stop_reports.report_path(exec_properties.get(STOP_REPORT_DIR_KEY), run_id,
                                     report.QUARANTINE_REPORT),
        )

