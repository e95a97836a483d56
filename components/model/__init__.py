"""MARCO's image classifier: the Inception-v3 variant and its input preprocessing."""

from components.model.inception import (
    DEMO,
    END_POINTS,
    MIXED_END_POINTS,
    PAPER,
    PAPER_DEPTH_CAPS,
    PAPER_TABLE3,
    PRESETS,
    RELEASED_CHECKPOINT_OVERRIDES,
    TINY,
    ModelConfig,
    build_model,
    end_points,
    final_map_size,
    inception_v3_base,
)

__all__ = [
    "DEMO",
    "END_POINTS",
    "MIXED_END_POINTS",
    "PAPER",
    "PAPER_DEPTH_CAPS",
    "PAPER_TABLE3",
    "PRESETS",
    "RELEASED_CHECKPOINT_OVERRIDES",
    "TINY",
    "ModelConfig",
    "build_model",
    "end_points",
    "final_map_size",
    "inception_v3_base",
]
