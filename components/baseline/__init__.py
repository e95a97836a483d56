"""The Evaluator's baseline read from the pipeline's serving folder (ServedModelBaseline).

``newest_served_version`` is importable without TFX: a run submission calls it to
fill the component's ``served_version`` runtime parameter.
"""

from components.baseline.served import newest_served_version

__all__ = ["newest_served_version"]
