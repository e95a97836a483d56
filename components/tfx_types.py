"""The types of TFX's executor and driver interfaces, named once for every component.

An executor's ``Do`` takes its input and output artifacts by channel key
(:data:`Artifacts`) and its execution properties (:data:`Properties`).
"""

from __future__ import annotations

from typing import Any

from tfx import types

Artifacts = dict[str, list[types.Artifact]]
Properties = dict[str, Any]
