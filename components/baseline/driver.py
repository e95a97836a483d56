"""Driver of ServedModelBaseline: puts what the baseline will be into the cache key.

The component has no input artifacts, so TFX's cache key is only its parameters:
without this driver, a run after a new push would reuse the baseline of the run
before. Like ImageExampleGen's driver, it sets an execution property, here
``served_version`` (:func:`components.baseline.served.baseline_key`: the newest
served version, or while nothing is served the init model's version), which the cache
key includes. Where TFX runs no custom drivers (Kubeflow Pipelines, Vertex
AI), the same value is passed as a runtime parameter when a run is submitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from components.baseline.executor import INIT_FROM_KEY, SERVED_VERSION_KEY, SERVING_DIR_KEY
from components.baseline.served import baseline_key
from components.drivers import ComputedPropertyDriver


class Driver(ComputedPropertyDriver):
    """Adds ``served_version`` to the execution properties."""

    KEY = SERVED_VERSION_KEY

    def compute(self, exec_properties: Mapping[str, Any]) -> str:
        return baseline_key(exec_properties[SERVING_DIR_KEY],
                            exec_properties.get(INIT_FROM_KEY))
