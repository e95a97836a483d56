"""Driver of ServedModelBaseline: puts the newest served version into the cache key.

The component has no input artifacts, so TFX's cache key is only its parameters:
without this driver, a run after a new push would reuse the baseline of the run
before. Like ImageExampleGen's driver, it sets an execution property, here
``served_version`` (:func:`components.baseline.served.newest_served_version`), which
the cache key includes. Where TFX runs no custom drivers (Kubeflow Pipelines, Vertex
AI), the same value is passed as a runtime parameter when a run is submitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.baseline.executor import (
    INIT_FROM_KEY,
    SERVED_VERSION_KEY,
    SERVING_DIR_KEY,
    init_version_key,
)
from components.baseline.served import init_model, newest_served_version
from components.drivers import ComputedPropertyDriver


class Driver(ComputedPropertyDriver):
    """Adds ``served_version`` to the execution properties."""

    KEY = SERVED_VERSION_KEY

    def compute(self, exec_properties: Mapping[str, Any]) -> str:
        version = newest_served_version(exec_properties[SERVING_DIR_KEY])
        init_from = exec_properties.get(INIT_FROM_KEY)
        if version or not init_from:
            return version
        # Nothing served: the baseline is the init model, whose newest version counts.
        return init_version_key(init_model(init_from))
