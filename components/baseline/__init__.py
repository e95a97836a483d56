"""The Evaluator's baseline read from the pipeline's serving folder (ServedModelBaseline).

``baseline_key`` and ``newest_served_version`` are importable without TFX: a run
submission calls ``baseline_key`` to fill the component's ``served_version`` runtime
parameter.
"""

from components.baseline.served import baseline_key, newest_served_version

__all__ = ["baseline_key", "newest_served_version"]
