"""AnomalyGate: stops the pipeline when ExampleValidator found anomalies in the data.

TFX's ExampleValidator only records anomalies (and a ``blessed`` flag per split); the
run carries on to Transform and training. This component reads the anomalies
artifact and fails the run with a message naming each feature and the offending
values, e.g. an institution or native label outside the schema's domain, which is
what happens when data for a new institution arrives before its catalogue file and a
regenerated ``schemas/schema.pbtxt``. Wire it with ``transform.add_upstream_node(gate)``.

When it stops a run it first writes the full list to ``stop_report_dir`` (as
``<run stamp>-anomalies.txt``, beside the quarantine report ingestion writes there
when its budget stops a run), so that the account outlives the failed step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils

from components import stop_reports
from components.tfx_types import Artifacts, Properties

ANOMALIES_KEY = "anomalies"
STOP_REPORT_DIR_KEY = "stop_report_dir"
CATALOGUE_DIR_KEY = "catalogue_dir"
SCHEMA_DIFF_FILE = "SchemaDiff.pb"  # ExampleValidator's file name per split
# Name (after a run stamp) of the anomalies report that outlives a stopped run.
ANOMALIES_REPORT = "anomalies.txt"
HINT = (
    "A new institution or native label needs its catalogue file in schemas/sources/ "
    "and `marco schema update`; otherwise fix the data."
)
OUTSIDE_CATALOGUE_HINT = (
    "The schema was derived from the catalogue {catalogue}: a new institution or "
    "native label needs its catalogue file there; otherwise fix the data."
)


class DataAnomalies(RuntimeError):
    """ExampleValidator found anomalies; the message lists them per split and feature.

    Attributes:
        problems: one line per split and anomalous feature.
        report_path: where the full list was written to outlive the failed step, or None.
    """

    def __init__(self, message: str, problems: list[str] | None = None,
                 report_path: str | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])
        self.report_path = report_path

    def __reduce__(self):
        return type(self), (str(self), self.problems, self.report_path)


def describe_anomalies(anomalies: anomalies_pb2.Anomalies) -> list[str]:
    """One line per anomalous feature: its name and TFDV's description (with values)."""
    lines = []
    for feature in sorted(anomalies.anomaly_info):
        info = anomalies.anomaly_info[feature]
        reasons = [
            f"{r.short_description}: {r.description}".strip() for r in info.reason
        ] or [info.description]
        lines.append(f"feature {feature!r}: " + " | ".join(reasons))
    if anomalies.HasField("dataset_anomaly_info"):
        info = anomalies.dataset_anomaly_info
        reasons = [f"{r.short_description}: {r.description}" for r in info.reason]
        lines.append("data set: " + (" | ".join(reasons) or info.description))
    return lines


def read_anomalies(split_dir: str) -> anomalies_pb2.Anomalies:
    """The anomalies ExampleValidator wrote into one split folder of its artifact."""
    path = os.path.join(split_dir, SCHEMA_DIFF_FILE)
    return anomalies_pb2.Anomalies.FromString(io_utils.read_bytes_file(path))


def write_report(path: str, problems: list[str], split_dirs: Mapping[str, str],
                 schema: str) -> str:
    """Writes every anomaly line, the schema and where the anomalies are, to ``path``."""
    from apache_beam.io.filesystems import FileSystems

    lines = [f"The data does not match {schema}; the run stopped before training.", "",
             *problems, "", "ExampleValidator's anomalies, per split:"]
    lines += [f"  {split}: {folder}" for split, folder in sorted(split_dirs.items())]
    directory = path.rsplit("/", 1)[0]
    if directory and not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    with FileSystems.create(path) as handle:
        handle.write(("\n".join(lines) + "\n").encode("utf-8"))
    return path


def check_anomalies(split_dirs: Mapping[str, str], *, report_path: str | None = None,
                    catalogue_dir: str | None = None) -> None:
    """Raise when any split of an ExampleAnomalies artifact has an anomaly.

    Args:
        split_dirs: split name -> that split's folder in the anomalies artifact.
        report_path: where to write the full list before raising (None: nowhere).
        catalogue_dir: the run's catalogue when it is not the project's; the schema
            was then derived from it.

    Raises:
        DataAnomalies: naming the split, each feature and the values outside the schema.
    """
    problems = []
    for split, split_dir in sorted(split_dirs.items()):
        for line in describe_anomalies(read_anomalies(split_dir)):
            problems.append(f"[{split}] {line}")
    if not problems:
        return
    if catalogue_dir:
        schema = f"the schema derived from the catalogue {catalogue_dir}"
        hint = OUTSIDE_CATALOGUE_HINT.format(catalogue=catalogue_dir)
    else:
        schema, hint = "schemas/schema.pbtxt", HINT
    if report_path:
        write_report(report_path, problems, split_dirs, schema)
    where = f"\nFull anomalies report: {report_path}" if report_path else ""
    raise DataAnomalies(
        f"the data does not match {schema}, so the run stops before training:\n  "
        + "\n  ".join(problems) + where + f"\n{hint}",
        problems, report_path,
    )


class Executor(base_executor.BaseExecutor):
    """Reads every split's anomalies and raises on any."""

    def Do(self, input_dict: Artifacts, output_dict: Artifacts,
           exec_properties: Properties) -> None:
        artifacts = input_dict[ANOMALIES_KEY]
        splits = artifact_utils.decode_split_names(
            artifact_utils.get_single_instance(artifacts).split_names
        )
        run_id = self._context.pipeline_run_id if self._context else None
        check_anomalies(
            {s: artifact_utils.get_split_uri(artifacts, s) for s in splits},
            report_path=stop_reports.report_path(
                exec_properties.get(STOP_REPORT_DIR_KEY), run_id, ANOMALIES_REPORT),
            catalogue_dir=exec_properties.get(CATALOGUE_DIR_KEY) or None,
        )


class AnomalyGateSpec(types.ComponentSpec):
    """Input of :class:`AnomalyGate`; it has no output, only the power to stop the run."""

    PARAMETERS: ClassVar[dict] = {
        STOP_REPORT_DIR_KEY: ExecutionParameter(type=str, optional=True),
        CATALOGUE_DIR_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS: ClassVar[dict] = {
        ANOMALIES_KEY: ChannelParameter(type=tfx.types.standard_artifacts.ExampleAnomalies),
    }
    OUTPUTS: ClassVar[dict] = {}


class AnomalyGate(base_component.BaseComponent):
    """Fails the run when ExampleValidator's anomalies artifact is not empty."""

    SPEC_CLASS = AnomalyGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, anomalies: types.BaseChannel, *, stop_report_dir: str | None = None,
                 catalogue_dir: str | None = None) -> None:
        """Args:
            anomalies: the ``anomalies`` output of ExampleValidator.
            stop_report_dir: folder (local or any Beam file system) that receives the
                full anomalies report when the gate stops the run.
            catalogue_dir: the run's catalogue when the schema was derived from it
                (named in the message), else None.
        """
        super().__init__(spec=AnomalyGateSpec(
            anomalies=anomalies, stop_report_dir=stop_report_dir, catalogue_dir=catalogue_dir,
        ))
