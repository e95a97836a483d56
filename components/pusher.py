"""The Pusher: TFX's filesystem Pusher that never pushes the model already served.

A blessed candidate is pushed as TFX's Pusher pushes it (a new numbered version
folder in the serving folder, TF Serving's layout), unless it is the model the
newest served version already holds: the same Model artifact (its URI, from the
version's push record) or the same SavedModel files (content digest). Then nothing
is written, and the PushedModel artifact is marked not pushed (``pushed`` 0, as for
an unblessed model) with ``not_pushed_reason`` and ``served_version``. Every push
leaves a push record in its version folder (:mod:`components.baseline.served`).

The endpoint pusher (TFX's Vertex AI Pusher, for ``endpoint_name``) follows the same
rule against the same serving folder, named in its ``custom_config`` under
:data:`SERVING_DIR_CONFIG`; it runs before the filesystem Pusher, so both see the
serving folder as it was when the candidate was blessed.
"""

from __future__ import annotations

import logging

from tfx import types
from tfx import v1 as tfx
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.extensions.google_cloud_ai_platform.pusher import executor as vertex_pusher_executor
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import json_utils, proto_utils

from components.baseline import served
from components.tfx_types import Artifacts, Properties

PUSHED_PROPERTY = "pushed"
PUSHED_DESTINATION_PROPERTY = "pushed_destination"
PUSHED_VERSION_PROPERTY = "pushed_version"
NOT_PUSHED_REASON_PROPERTY = "not_pushed_reason"
SERVED_VERSION_PROPERTY = "served_version"
ALREADY_SERVED = "already served"
# custom_config key of the endpoint pusher: the serving folder to compare with.
SERVING_DIR_CONFIG = "marco_serving_dir"

_LOG = logging.getLogger(__name__)


def _serving_dir(exec_properties: Properties) -> str | None:
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination
    )
    if destination.WhichOneof("destination") != "filesystem":
        return None
    return destination.filesystem.base_directory


def _candidate(input_dict: Artifacts) -> types.Artifact | None:
    models = input_dict.get(standard_component_specs.MODEL_KEY)
    return artifact_utils.get_single_instance(models) if models else None


def skipped_as_served(
    executor: pusher_executor.Executor,
    input_dict: Artifacts,
    output_dict: Artifacts,
    serving_dir: str | None,
) -> bool:
    """Marks the push not done, and says True, when the blessed candidate is the model
    the newest version in ``serving_dir`` holds (same artifact, or same files)."""
    newest = served.newest_served(serving_dir) if serving_dir else None
    if newest is None or not executor.CheckBlessing(input_dict):
        return False
    candidate = _candidate(input_dict)
    record = served.read_push_record(newest.path)
    if candidate is not None and record.get(served.RECORD_MODEL_URI) == candidate.uri:
        why = f"same model {candidate.uri}"
    else:
        digest = served.saved_model_digest(executor.GetModelPath(input_dict))
        if digest != served.saved_model_digest(newest.path):
            return False
        why = f"same SavedModel files (sha256 {digest})"
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY]
    )
    executor._MarkNotPushed(model_push)
    model_push.set_string_custom_property(NOT_PUSHED_REASON_PROPERTY, f"{ALREADY_SERVED}: {why}")
    model_push.set_string_custom_property(SERVED_VERSION_PROPERTY, newest.version)
    _LOG.info("Not pushed: the model is already served as version %s (%s)",
              newest.version, newest.path)
    return True


class Executor(pusher_executor.Executor):
    """TFX's Pusher executor, skipping a candidate identical to the newest served version."""

    def Do(self, input_dict: Artifacts, output_dict: Artifacts,
           exec_properties: Properties) -> None:
        serving_dir = _serving_dir(exec_properties)
        if skipped_as_served(self, input_dict, output_dict, serving_dir):
            return
        super().Do(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY]
        )
        if model_push.get_int_custom_property(PUSHED_PROPERTY) and serving_dir:
            self._record_push(input_dict, model_push)

    def _record_push(
        self, input_dict: Artifacts, model_push: types.Artifact
    ) -> None:
        destination = model_push.get_string_custom_property(PUSHED_DESTINATION_PROPERTY)
        if served.read_push_record(destination):
            return  # TFX found the version folder there already and copied nothing
        candidate = _candidate(input_dict)
        record = {served.RECORD_DIGEST: served.saved_model_digest(destination)}
        if candidate is not None:
            record[served.RECORD_MODEL_URI] = candidate.uri
            record[served.RECORD_MODEL_ID] = candidate.id
        served.write_push_record(destination, record)


class Pusher(tfx.components.Pusher):
    """TFX's Pusher (component id ``Pusher``) running :class:`Executor`."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)


class EndpointExecutor(vertex_pusher_executor.Executor):
    """TFX's Vertex AI Pusher executor, skipping the model already served."""

    def Do(self, input_dict: Artifacts, output_dict: Artifacts,
           exec_properties: Properties) -> None:
        config = json_utils.loads(
            exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null"
        ) or {}
        if skipped_as_served(self, input_dict, output_dict, config.get(SERVING_DIR_CONFIG)):
            return
        super().Do(input_dict, output_dict, exec_properties)


class EndpointPusher(tfx.extensions.google_cloud_ai_platform.Pusher):
    """TFX's Vertex AI Pusher running :class:`EndpointExecutor`."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(EndpointExecutor)
