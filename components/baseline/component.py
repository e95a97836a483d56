"""ServedModelBaseline: the model the pipeline's serving folder serves, as a Model artifact."""

from __future__ import annotations

from typing import ClassVar

from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.baseline import driver, executor

COMPONENT_ID = "ServedModelBaseline"


class ServedModelBaselineSpec(types.ComponentSpec):
    """Parameters and output of :class:`ServedModelBaseline`."""

    PARAMETERS: ClassVar[dict] = {
        executor.SERVING_DIR_KEY: ExecutionParameter(type=str),
        # The cache key: the newest served version's name ("" when none), set by the
        # driver where drivers run, passed as a runtime parameter where they do not.
        executor.SERVED_VERSION_KEY: ExecutionParameter(type=str, optional=True),
        # The run's init model, the baseline while nothing is served.
        executor.INIT_FROM_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS: ClassVar[dict] = {}
    OUTPUTS: ClassVar[dict] = {
        executor.MODEL_KEY: ChannelParameter(type=tfx.types.standard_artifacts.Model),
    }


class ServedModelBaseline(base_component.BaseComponent):
    """The newest version in the serving folder, for the Evaluator's ``baseline_model``.

    Reads the serving folder the Pusher writes (TF Serving's layout, local or
    ``gs://``) rather than querying ML Metadata, so it runs on every orchestrator and
    only ever sees this pipeline's own pushes. Output ``model``: a copy of the newest
    served SavedModel at ``<uri>/Format-Serving``, with custom properties
    ``served_version``, ``served_path``, ``served_digest`` and, when the push recorded
    it, ``served_model_uri``; when nothing is served, an empty artifact whose
    ``served_version`` is "" (the project's Evaluator then evaluates without a
    baseline), unless the run starts from an earlier model (``init_from``), which is
    then the baseline.
    """

    SPEC_CLASS = ServedModelBaselineSpec
    DRIVER_CLASS = driver.Driver
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, serving_dir: str, served_version: str | None = None,
                 init_from: str | None = None) -> None:
        """Configure the baseline.

        Args:
            serving_dir: the pipeline's serving folder (where its Pusher writes).
            served_version: the newest served version's name when computed outside the
                component (a runtime parameter on Kubeflow and Vertex, where TFX runs
                no custom drivers); the local driver computes it itself.
            init_from: the model the run's Trainer starts from: the baseline while
                nothing is served (see :class:`executor.Executor`).
        """
        if not serving_dir:
            raise ValueError("ServedModelBaseline needs the serving folder")
        spec = ServedModelBaselineSpec(
            serving_dir=serving_dir,
            served_version=served_version,
            init_from=init_from or None,
            model=types.Channel(type=tfx.types.standard_artifacts.Model),
        )
        super().__init__(spec=spec)
