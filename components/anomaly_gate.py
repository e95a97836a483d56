"""AnomalyGate: stops the pipeline when ExampleValidator found anomalies in the data.

TFX's ExampleValidator only records anomalies (and a ``blessed`` flag per split); the
run carries on to Transform and training. This component reads the anomalies
artifact and fails the run with a message naming each feature and the offending
values, e.g. an institution or native label outside the schema's domain, which is
what happens when data for a new institution arrives before its catalogue file and a
regenerated ``schemas/schema.pbtxt``. Wire it with ``transform.add_upstream_node(gate)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils
from tfx.types.component_spec import ChannelParameter
from tfx.utils import io_utils

ANOMALIES_KEY = "anomalies"
SCHEMA_DIFF_FILE = "SchemaDiff.pb"  # ExampleValidator's file name per split
HINT = (
    "A new institution or native label needs its catalogue file in schemas/sources/ "
    "and `marco schema update`; otherwise fix the data."
)


class DataAnomalies(RuntimeError):
    """ExampleValidator found anomalies; the message lists them per split and feature."""


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


def check_anomalies(split_dirs: Mapping[str, str]) -> None:
    """Raise when any split of an ExampleAnomalies artifact has an anomaly.

    Args:
        split_dirs: split name -> that split's folder in the anomalies artifact.

    Raises:
        DataAnomalies: naming the split, each feature and the values outside the schema.
    """
    problems = []
    for split, split_dir in sorted(split_dirs.items()):
        for line in describe_anomalies(read_anomalies(split_dir)):
            problems.append(f"[{split}] {line}")
    if problems:
        raise DataAnomalies(
            "the data does not match schemas/schema.pbtxt, so the run stops before "
            "training:\n  " + "\n  ".join(problems) + f"\n{HINT}"
        )


class Executor(base_executor.BaseExecutor):
    """Reads every split's anomalies and raises on any."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        artifacts = input_dict[ANOMALIES_KEY]
        splits = artifact_utils.decode_split_names(
            artifact_utils.get_single_instance(artifacts).split_names
        )
        check_anomalies({s: artifact_utils.get_split_uri(artifacts, s) for s in splits})


class AnomalyGateSpec(types.ComponentSpec):
    """Input of :class:`AnomalyGate`; it has no output, only the power to stop the run."""

    PARAMETERS: ClassVar[dict] = {}
    INPUTS: ClassVar[dict] = {
        ANOMALIES_KEY: ChannelParameter(type=tfx.types.standard_artifacts.ExampleAnomalies),
    }
    OUTPUTS: ClassVar[dict] = {}


class AnomalyGate(base_component.BaseComponent):
    """Fails the run when ExampleValidator's anomalies artifact is not empty."""

    SPEC_CLASS = AnomalyGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, anomalies: types.BaseChannel) -> None:
        """Args: anomalies: the ``anomalies`` output of ExampleValidator."""
        super().__init__(spec=AnomalyGateSpec(anomalies=anomalies))
