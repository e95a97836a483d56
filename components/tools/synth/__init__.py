"""Synthetic MARCO-like drop images, written in every institution's own layout.

:mod:`components.tools.synth.render` draws the images, :mod:`components.tools.synth.writer` plans
the data set and writes files, manifests and MARCO shards, and
:mod:`components.tools.synth.preview` puts synthetic and real drops side by side.
"""

from components.tools.synth.render import VARIANTS, Look, hints_for
from components.tools.synth.writer import (
    FORMATS,
    PAPER_CLASS_IMAGES,
    SUMMARY_FILE,
    Plan,
    SynthError,
    apportion,
    generate,
    largest_remainder,
    make_plan,
)

__all__ = [
    "FORMATS",
    "PAPER_CLASS_IMAGES",
    "SUMMARY_FILE",
    "VARIANTS",
    "Look",
    "Plan",
    "SynthError",
    "apportion",
    "generate",
    "hints_for",
    "largest_remainder",
    "make_plan",
]
