"""Driver of ServedModelBaseline: puts the newest served version into the cache key.

The component has no input artifacts, so TFX's cache key is only its parameters:
without this driver, a run after a new push would reuse the baseline of the run
before. Like ImageExampleGen's driver, it sets an execution property, here
``served_version`` (:func:`components.baseline.served.newest_served_version`), which
the cache key includes. Where TFX runs no custom drivers (Kubeflow Pipelines, Vertex
AI), the same value is passed as a runtime parameter when a run is submitted.
"""

from __future__ import annotations

from typing import Any

from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types, data_types_utils, metadata
from tfx.orchestration.portable import base_driver as portable_base_driver
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto.orchestration import driver_output_pb2

from components.baseline.executor import SERVED_VERSION_KEY, SERVING_DIR_KEY
from components.baseline.served import newest_served_version


class Driver(base_driver.BaseDriver, portable_base_driver.BaseDriver):
    """Adds ``served_version`` to the execution properties (legacy and IR runners)."""

    def __init__(self, metadata_handle: metadata.Metadata) -> None:
        base_driver.BaseDriver.__init__(self, metadata_handle)
        portable_base_driver.BaseDriver.__init__(self, metadata_handle)

    def resolve_exec_properties(
        self,
        exec_properties: dict[str, Any],
        pipeline_info: data_types.PipelineInfo,
        component_info: data_types.ComponentInfo,
    ) -> dict[str, Any]:
        exec_properties[SERVED_VERSION_KEY] = newest_served_version(
            exec_properties[SERVING_DIR_KEY]
        )
        return exec_properties

    def run(
        self, execution_info: portable_data_types.ExecutionInfo
    ) -> driver_output_pb2.DriverOutput:
        result = driver_output_pb2.DriverOutput()
        for key, value in execution_info.exec_properties.items():
            if value is not None:
                data_types_utils.set_metadata_value(result.exec_properties[key], value)
        result.exec_properties[SERVED_VERSION_KEY].string_value = newest_served_version(
            execution_info.exec_properties[SERVING_DIR_KEY]
        )
        return result
