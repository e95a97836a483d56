"""The hottest region of a heatmap: a first answer to "where is the crystal".

The heatmap is smoothed with a Gaussian (single hot pixels are noise, a crystal is a
patch), its hottest point found, and the region grown from it: the connected pixels
whose smoothed heat is at least :data:`DEFAULT_LEVEL` of the way from the map's median
(its background) to that peak. The region is reported as a circle: its centre is the
heat-weighted centroid of the region, its radius that of a disc of the same area.

Heatmaps are computed on the image the network sees, the centre square of the drop
image resized to the network's side; :func:`to_source_pixels` maps a region back to the
pixels of the image file, which is what a dispenser or a viewer wants.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

DEFAULT_LEVEL = 0.5
# Gaussian smoothing, as a fraction of the heatmap's side (at least one pixel).
DEFAULT_SMOOTHING = 0.01


@dataclasses.dataclass(frozen=True)
class Region:
    """A circle in pixel coordinates: ``x`` to the right, ``y`` down, from the top-left
    corner of the top-left pixel (so the first pixel's centre is at 0.5, 0.5)."""

    x: float
    y: float
    radius: float


def hottest_region(saliency: np.ndarray, level: float = DEFAULT_LEVEL,
                   smoothing: float = DEFAULT_SMOOTHING) -> Region | None:
    """The hottest region of ``saliency`` (``[height, width]``), or None if it is flat.

    Args:
        saliency: non-negative heat per pixel.
        level: where the region's edge lies between the background (the median) and
            the peak of the smoothed map, from 0 (everything connected above the
            background) to 1 (the peak alone).
        smoothing: the Gaussian's standard deviation as a fraction of the map's longer
            side; at least one pixel.
    """
    heat = np.asarray(saliency, dtype=np.float64)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"a heatmap is a 2-D array, got shape {list(heat.shape)}")
    if not 0.0 <= level < 1.0:
        raise ValueError(f"level must be in [0, 1), got {level}")
    sigma = max(1.0, smoothing * max(heat.shape))
    smooth = ndimage.gaussian_filter(np.nan_to_num(heat), sigma, mode="nearest")
    background = float(np.median(smooth))
    peak_index = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    peak = float(smooth[peak_index])
    if not peak > background:
        return None
    above = smooth >= background + level * (peak - background)
    labels, _ = ndimage.label(above)
    region = labels == labels[peak_index]
    weights = np.where(region, smooth - background, 0.0)
    rows, cols = np.indices(smooth.shape)
    total = weights.sum()
    y = float((rows * weights).sum() / total) + 0.5
    x = float((cols * weights).sum() / total) + 0.5
    radius = math.sqrt(float(region.sum()) / math.pi)
    return Region(x, y, radius)


def to_source_pixels(region: Region, heatmap_side: int, source_size: tuple[int, int]) -> Region:
    """``region`` on a heatmap of the network's input, in the source image's pixels.

    The network's input is the centre square crop of the source image (the whole short
    side, as :func:`components.model.preprocessing.central_square_crop` cuts it)
    resized to ``heatmap_side``. The scale maps pixel edges to pixel edges; resizing
    grids that sample at other positions within a pixel differ from it by less than
    one source pixel.

    Args:
        region: in heatmap pixels.
        heatmap_side: the heatmap's (the network input's) side.
        source_size: ``(height, width)`` of the image as decoded.
    """
    height, width = source_size
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    scale = side / heatmap_side
    return Region(left + region.x * scale, top + region.y * scale, region.radius * scale)
