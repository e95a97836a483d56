"""Heatmap overlays: the image the network saw, in grey, with the heat in colour on top.

As in the MARCO paper's Figure 4, the heat is drawn over a greyscale version of the
input so that the colour belongs to the heatmap alone. Heat is scaled so that its
99th percentile is full strength (a few extreme pixels would otherwise leave the rest
dark) and blended in proportion to its strength: cold pixels show the drop as it is.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from components.tools.explain.locate import Region

COLORMAP = "inferno"
CLIP_PERCENTILE = 99.0
OPACITY = 0.8
CIRCLE_COLOUR = (0, 255, 255)


def normalised_heat(saliency: np.ndarray, percentile: float = CLIP_PERCENTILE) -> np.ndarray:
    """``saliency`` scaled to [0, 1], its ``percentile``-th percentile and above at 1."""
    heat = np.nan_to_num(np.asarray(saliency, dtype=np.float32))
    top = float(np.percentile(heat, percentile)) if heat.size else 0.0
    if top <= 0.0:
        top = float(heat.max()) if heat.size else 0.0
    if top <= 0.0:
        return np.zeros_like(heat)
    return np.clip(heat / top, 0.0, 1.0)


def overlay_rgb(image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """uint8 ``[size, size, 3]``: the prepared image in grey with the heat blended on.

    Args:
        image: float ``[size, size, 3]`` in [-1, 1] (the network's input).
        saliency: ``[size, size]``.
    """
    import matplotlib

    image = np.asarray(image, dtype=np.float32)
    if image.shape[:2] != np.shape(saliency):
        raise ValueError(f"image {list(image.shape[:2])} and heatmap "
                         f"{list(np.shape(saliency))} differ in size")
    rgb = (np.clip(image, -1.0, 1.0) + 1.0) / 2.0
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    heat = normalised_heat(saliency)
    colours = matplotlib.colormaps[COLORMAP](heat)[..., :3].astype(np.float32)
    weight = (OPACITY * heat)[..., np.newaxis]
    blended = grey[..., np.newaxis] * (1.0 - weight) + colours * weight
    return np.round(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)


def overlay_png(image: np.ndarray, saliency: np.ndarray, region: Region | None = None) -> bytes:
    """The overlay as PNG bytes; ``region`` (in heatmap pixels) is drawn as a circle."""
    picture = Image.fromarray(overlay_rgb(image, saliency), mode="RGB")
    if region is not None:
        draw = ImageDraw.Draw(picture)
        width = max(1, round(picture.width / 200))
        draw.ellipse(
            (region.x - region.radius, region.y - region.radius,
             region.x + region.radius, region.y + region.radius),
            outline=CIRCLE_COLOUR, width=width,
        )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
