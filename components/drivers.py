"""Drivers that put a digest of what a component reads into its cache key.

ImageExampleGen and ServedModelBaseline have no input artifacts, so TFX's cache key
is only their parameters, which name folders rather than their content. Their
drivers compute one more execution property when the component starts (the data's
fingerprint, the newest served version), so the cache key changes with what the
folders hold. Where TFX runs no custom drivers (Kubeflow Pipelines, Vertex AI), the
same values are passed as runtime parameters when a run is submitted
(:mod:`kubeflow.submit`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types, data_types_utils, metadata
from tfx.orchestration.portable import base_driver as portable_base_driver
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto.orchestration import driver_output_pb2

from components.tfx_types import Properties


class ComputedPropertyDriver(base_driver.BaseDriver, portable_base_driver.BaseDriver):
    """Sets execution property :attr:`KEY` to :meth:`compute` of the others.

    Works under the legacy and the IR-based launchers. With :attr:`TAG_OUTPUTS`, the
    value is also recorded on every output artifact as a custom property.
    """

    KEY: ClassVar[str]
    TAG_OUTPUTS: ClassVar[bool] = False

    def __init__(self, metadata_handle: metadata.Metadata) -> None:
        base_driver.BaseDriver.__init__(self, metadata_handle)
        portable_base_driver.BaseDriver.__init__(self, metadata_handle)

    def compute(self, exec_properties: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def resolve_exec_properties(
        self,
        exec_properties: Properties,
        pipeline_info: data_types.PipelineInfo,
        component_info: data_types.ComponentInfo,
    ) -> Properties:
        exec_properties[self.KEY] = self.compute(exec_properties)
        return exec_properties

    def run(
        self, execution_info: portable_data_types.ExecutionInfo
    ) -> driver_output_pb2.DriverOutput:
        result = driver_output_pb2.DriverOutput()
        value = self.compute(dict(execution_info.exec_properties))
        for key, known in execution_info.exec_properties.items():
            if known is not None:
                data_types_utils.set_metadata_value(result.exec_properties[key], known)
        result.exec_properties[self.KEY].string_value = value
        if self.TAG_OUTPUTS:
            for key, artifacts in execution_info.output_dict.items():
                for artifact in artifacts:
                    output = copy.deepcopy(artifact.mlmd_artifact)
                    output.custom_properties[self.KEY].string_value = value
                    result.output_artifacts[key].artifacts.append(output)
        return result
