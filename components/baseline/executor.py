"""Executor of ServedModelBaseline: copies the newest served version into a Model artifact."""

from __future__ import annotations

import logging

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.baseline import served
from components.tfx_types import Artifacts, Properties

MODEL_KEY = "model"
SERVING_DIR_KEY = "serving_dir"
SERVED_VERSION_KEY = "served_version"
INIT_FROM_KEY = "init_from"

# Custom properties of the output Model artifact.
SERVED_VERSION_PROPERTY = "served_version"  # "" when nothing is served: no model
SERVED_PATH_PROPERTY = "served_path"
SERVED_DIGEST_PROPERTY = "served_digest"
SERVED_MODEL_URI_PROPERTY = "served_model_uri"  # the pushed Model artifact, when recorded
# Where the baseline came from: "served" (the serving folder) or "init" (the run's
# init_from model, while nothing is served yet).
BASELINE_SOURCE_PROPERTY = "baseline_source"
SOURCE_SERVED = "served"
SOURCE_INIT = served.INIT_SOURCE

_LOG = logging.getLogger(__name__)


def is_empty(model: types.Artifact) -> bool:
    """True for a baseline artifact that holds no model (nothing was served)."""
    return (
        model.has_custom_property(SERVED_VERSION_PROPERTY)
        and not model.get_string_custom_property(SERVED_VERSION_PROPERTY)
    )


class Executor(base_executor.BaseExecutor):
    """Hands the newest served version over as a Model, or marks the Model empty.

    The SavedModel is copied to ``<uri>/Format-Serving``, where TFX's Evaluator and
    Pusher look for a Trainer's model. The ``served_version`` execution property is
    the cache key only: the version copied is always the newest when this runs, and
    its name is recorded on the artifact.

    When nothing is served and the run starts from an earlier model (``init_from``),
    that model is the baseline: a fine-tuned model must then beat the model it
    started from (for example the imported released MARCO model) to be pushed. Its
    ``served_version`` is ``init:<version>`` (``init`` for a bare SavedModel folder),
    never empty, and ``baseline_source`` says ``init``.
    """

    def Do(self, input_dict: Artifacts, output_dict: Artifacts,
           exec_properties: Properties) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(output_dict[MODEL_KEY])
        serving_dir = exec_properties[SERVING_DIR_KEY]
        newest = served.newest_served(serving_dir)
        if newest is None:
            init_from = exec_properties.get(INIT_FROM_KEY)
            if init_from:
                self._init_baseline(model, init_from, serving_dir)
                return
            model.set_string_custom_property(SERVED_VERSION_PROPERTY, "")
            _LOG.info("No model served in %s: no baseline", serving_dir)
            return
        expected = exec_properties.get(SERVED_VERSION_KEY)
        if expected and expected != newest.version:
            _LOG.info("Served version %s replaced %s since the run started",
                      newest.version, expected)
        copy = path_utils.serving_model_dir(model.uri)
        io_utils.copy_dir(newest.path, copy)
        model.set_string_custom_property(SERVED_VERSION_PROPERTY, newest.version)
        model.set_string_custom_property(BASELINE_SOURCE_PROPERTY, SOURCE_SERVED)
        model.set_string_custom_property(SERVED_PATH_PROPERTY, newest.path)
        model.set_string_custom_property(SERVED_DIGEST_PROPERTY, served.saved_model_digest(copy))
        record = served.read_push_record(newest.path)
        if record.get(served.RECORD_MODEL_URI):
            model.set_string_custom_property(
                SERVED_MODEL_URI_PROPERTY, str(record[served.RECORD_MODEL_URI])
            )
        _LOG.info("Baseline: served version %s from %s", newest.version, newest.path)

    @staticmethod
    def _init_baseline(model: types.Artifact, init_from: str, serving_dir: str) -> None:
        """Copies the run's init model into the baseline artifact."""
        init = served.init_model(init_from)
        copy = path_utils.serving_model_dir(model.uri)
        io_utils.copy_dir(init.path, copy)
        model.set_string_custom_property(SERVED_VERSION_PROPERTY, served.init_version_key(init))
        model.set_string_custom_property(BASELINE_SOURCE_PROPERTY, SOURCE_INIT)
        model.set_string_custom_property(SERVED_PATH_PROPERTY, init.path)
        model.set_string_custom_property(SERVED_DIGEST_PROPERTY, served.saved_model_digest(copy))
        _LOG.info("No model served in %s: baseline is the init model %s", serving_dir,
                  init.path)


def is_init_baseline(model: types.Artifact) -> bool:
    """True for a baseline artifact holding the run's init model."""
    return (model.has_custom_property(BASELINE_SOURCE_PROPERTY)
            and model.get_string_custom_property(BASELINE_SOURCE_PROPERTY) == SOURCE_INIT)
