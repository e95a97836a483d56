"""The MARCO pipeline graph, presets, runners and command line."""

import components as _components  # noqa: F401  (sets TF_USE_LEGACY_KERAS first)
