"""Rendering of synthetic crystallization drop photographs with numpy and Pillow.

An image is built as a float32 luminance plane (plate, dark well rim, bright well
floor, drop with a meniscus shadow), class content drawn on sharp full-resolution
layers (crystals, needles, oil droplets) or textured from a shared grain tile
(precipitate), then a per-image exposure, focus and sensor-noise model and, for
colour imagers, a smooth colour cast. Smooth fields are computed at low resolution
and enlarged, which keeps a 1280x960 image to a few tens of milliseconds.

The class is meant to be visible from shape and texture rather than from overall
brightness: exposure, contrast, zoom and rim darkness are drawn per image
independently of the class. Class content is sized to survive the ``demo`` model's
input, which shrinks a 960-pixel frame five times (to 195 pixels): precipitate
particles, crystal edges, needles and skin folds are at least about five pixels of a
960-pixel frame, so they are still a pixel or more across there.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from components.names import CLASS_NAMES

# Ways each class can look. Hints taken from native label words favour some of them.
VARIANTS: dict[str, tuple[str, ...]] = {
    "clear": ("plain", "dust", "streaky"),
    "crystals": ("faceted", "needles", "plates", "cluster", "micro", "spherulites"),
    "other": ("blur", "dark", "overexposed", "no_drop", "dispensing", "oil"),
    "precipitate": ("granular", "amorphous", "specks", "skin"),
}
VARIANT_WEIGHTS: dict[str, tuple[float, ...]] = {
    "clear": (0.55, 0.2, 0.25),
    "crystals": (0.3, 0.17, 0.13, 0.15, 0.15, 0.1),
    "other": (0.2, 0.1, 0.1, 0.15, 0.2, 0.25),
    "precipitate": (0.4, 0.25, 0.25, 0.1),
}
# Words of a native label or its description -> rendering hints.
HINT_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("needle", ("needles",)),
    ("plate", ("plates",)),
    ("micro", ("micro",)),
    ("shower", ("micro",)),
    ("spherul", ("spherulites",)),
    ("large", ("faceted",)),
    ("3d", ("faceted",)),
    ("heavy", ("heavy",)),
    ("light", ("light",)),
    ("skin", ("skin",)),
    ("phase", ("oil",)),
    ("oil", ("oil",)),
    ("dust", ("dust",)),
    ("fibre", ("dust",)),
    ("fiber", ("dust",)),
    ("no drop", ("no_drop",)),
    ("empty", ("no_drop",)),
    ("bad drop", ("dispensing",)),
    ("dispens", ("dispensing",)),
    ("imaging", ("blur", "dark", "overexposed")),
    ("fault", ("blur", "dark", "overexposed")),
    ("failure", ("blur", "dark", "overexposed")),
    ("unclassifiable", ("blur", "dark", "overexposed", "no_drop")),
    ("precipitate", ("precipitate",)),
)
HINT_PREFERENCE = 0.75  # chance of following a hint that names a variant
BROWN = np.array([0.55, 0.72, 0.92], dtype=np.float32)  # absorbance per channel: brownish
LOW = 8  # smooth fields are computed at 1/LOW of the image size


@dataclass(frozen=True)
class Look:
    """What an imager produces: frame size, colour or greyscale, sitting drop or oil."""

    width: int
    height: int
    colour: bool = True
    under_oil: bool = False


def hints_for(native: str, description: str = "") -> frozenset[str]:
    """Rendering hints from a native label and its description (keyword match).

    Args:
        native: the institution's own label, e.g. ``"crystals + precipitate"``.
        description: the catalogue description of that label, if any.

    Returns:
        Hint words such as ``needles``, ``heavy``, ``oil`` or ``precipitate``.
    """
    text = f"{native} {description}".lower().replace("_", " ")
    found: set[str] = set()
    for word, hints in HINT_WORDS:
        if word in text:
            found.update(hints)
    return frozenset(found)


def pick_variant(class_name: str, hints: frozenset[str], rng: np.random.Generator) -> str:
    """Choose how an image of ``class_name`` will look, favouring hinted variants."""
    if class_name not in VARIANTS:
        raise ValueError(f"unknown class {class_name!r}; expected one of {CLASS_NAMES}")
    variants = VARIANTS[class_name]
    hinted = [v for v in variants if v in hints]
    if hinted and rng.random() < HINT_PREFERENCE:
        return hinted[int(rng.integers(len(hinted)))]
    weights = np.asarray(VARIANT_WEIGHTS[class_name], dtype=float)
    return variants[int(rng.choice(len(variants), p=weights / weights.sum()))]


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=4)
def _grain_tile(size: int) -> np.ndarray:
    """A fixed, process-wide tile of fine grain (unit variance), cropped per image."""
    rng = np.random.default_rng(1986)
    small = rng.standard_normal((size // 2 + 1, size // 2 + 1)).astype(np.float32)
    fine = rng.standard_normal((size, size)).astype(np.float32)
    # Enlarged half-resolution noise gives 2-3 pixel grains; a little white noise keeps
    # single-pixel sparkle.
    up = np.asarray(
        Image.fromarray(small, mode="F").resize((size + 2, size + 2), Image.BILINEAR)
    )[:size, :size]
    tile = up * 1.6 + fine * 0.35
    tile -= tile.mean()
    tile /= tile.std()
    return np.ascontiguousarray(tile, dtype=np.float32)


def _grain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop (with flips) of the grain tile, shape (h, w)."""
    size = 256
    while size < max(h, w) + 1:
        size *= 2
    tile = _grain_tile(size)
    y = int(rng.integers(0, size - h + 1))
    x = int(rng.integers(0, size - w + 1))
    crop = tile[y : y + h, x : x + w]
    if rng.random() < 0.5:
        crop = crop[::-1]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop


def _enlarge(field: np.ndarray, h: int, w: int, resample=Image.BILINEAR) -> np.ndarray:
    """Resize a float32 field to (h, w)."""
    img = Image.fromarray(np.ascontiguousarray(field, dtype=np.float32), mode="F")
    return np.asarray(img.resize((w, h), resample))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Smooth random field of unit-ish amplitude with about ``cells`` bumps across."""
    gy = max(2, round(cells * h / max(h, w)) + 2)
    gx = max(2, round(cells * w / max(h, w)) + 2)
    coarse = rng.standard_normal((gy, gx)).astype(np.float32)
    return _enlarge(coarse, h, w, Image.BICUBIC)


def _u8_to_unit(img: Image.Image) -> np.ndarray:
    """An 'L' image as float32 in [0, 1]."""
    return np.asarray(img).astype(np.float32) * np.float32(1.0 / 255.0)


def _blob(
    cx: float,
    cy: float,
    radius: float,
    rng: np.random.Generator,
    aspect: float = 1.0,
    wobble: float = 0.06,
    points: int = 72,
) -> np.ndarray:
    """Vertices (n, 2) of a rounded, slightly irregular closed outline."""
    theta = np.linspace(0.0, 2.0 * math.pi, points, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        r += rng.normal(0.0, wobble / k) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    rot = rng.uniform(0, math.pi)
    x = radius * r * np.cos(theta)
    y = radius * aspect * r * np.sin(theta)
    c, s = math.cos(rot), math.sin(rot)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _raster(polys: list[np.ndarray], h: int, w: int, factor: int, blur: float = 0.0):
    """Fill polygons at 1/factor resolution and enlarge: anti-aliased float32 mask."""
    hs, ws = max(1, -(-h // factor)), max(1, -(-w // factor))
    img = Image.new("L", (ws, hs), 0)
    draw = ImageDraw.Draw(img)
    for poly in polys:
        draw.polygon([tuple(p) for p in (poly / factor).tolist()], fill=255)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur / factor))
    return _enlarge(_u8_to_unit(img), h, w)


def _soften(lum: np.ndarray, factor: float) -> np.ndarray:
    """Defocus: shrink by ``factor``, blur a little, enlarge again (a cheap wide blur)."""
    h, w = lum.shape
    f = max(1.0, factor)
    size = (max(2, round(w / f)), max(2, round(h / f)))
    small = np.asarray(Image.fromarray(lum, mode="F").resize(size, Image.BOX))
    small = (small + np.roll(small, 1, 0) + np.roll(small, -1, 0)) / 3
    small = (small + np.roll(small, 1, 1) + np.roll(small, -1, 1)) / 3
    mid = Image.fromarray(small.astype(np.float32), mode="F").resize(
        (max(2, w // 4), max(2, h // 4)), Image.BICUBIC
    )
    return np.array(mid.resize((w, h), Image.BILINEAR))


# --------------------------------------------------------------------------- canvas


class Canvas:
    """The scene being built: geometry, drop mask and the content layers."""

    def __init__(self, look: Look, rng: np.random.Generator):
        self.look = look
        self.rng = rng
        self.h, self.w = look.height, look.width
        self.s = float(min(self.h, self.w))
        self.px = self.s / 960.0  # one pixel of a 960-pixel frame
        self._layers: dict[str, Image.Image] = {}
        self._draws: dict[str, ImageDraw.ImageDraw] = {}
        self.brown: np.ndarray | None = None  # absorbance of brownish matter (float32)
        self.drop = True
        self.drops: list[tuple[float, float, float, float]] = []  # cx, cy, r, aspect
        self.blur = 0.0  # defocus, in pixels of a 960 frame
        self.exposure = 1.0
        self.wash = 0.0  # overexposure: pushes everything towards white
        self.mask: np.ndarray | None = None  # where drop content shows (float32, 0..1)
        self.geometry: dict = {}

    def layer(self, name: str) -> ImageDraw.ImageDraw:
        """A full-resolution 'L' layer ('dark', 'light' or 'brown') to draw on."""
        if name not in self._draws:
            img = Image.new("L", (self.w, self.h), 0)
            self._layers[name] = img
            self._draws[name] = ImageDraw.Draw(img)
        return self._draws[name]

    def layer_array(self, name: str) -> np.ndarray | None:
        img = self._layers.get(name)
        return None if img is None else _u8_to_unit(img)

    def width(self, base: float) -> int:
        """A line width of ``base`` pixels at 960, at least one pixel."""
        return max(1, round(base * self.px))

    def point_in_drop(self, spread: float = 0.85) -> tuple[float, float]:
        """A random point inside one of the drops (uniform over the disc)."""
        rng = self.rng
        if not self.drops:
            return (rng.uniform(0.2, 0.8) * self.w, rng.uniform(0.2, 0.8) * self.h)
        cx, cy, r, aspect = self.drops[int(rng.integers(len(self.drops)))]
        rho = r * spread * math.sqrt(rng.random())
        phi = rng.uniform(0, 2 * math.pi)
        return cx + rho * math.cos(phi), cy + rho * aspect * math.sin(phi)

    def add_brown(self, absorb: np.ndarray) -> None:
        self.brown = absorb if self.brown is None else self.brown + absorb


# --------------------------------------------------------------------------- content


def _polygon(cx, cy, size, n, aspect, rot, rng) -> list[tuple[float, float]]:
    angles = rot + np.arange(n) * (2 * math.pi / n) + rng.normal(0, 0.08, n)
    radii = size * rng.uniform(0.85, 1.1, n)
    x = radii * np.cos(angles)
    y = radii * np.sin(angles) * aspect
    c, s = math.cos(rot), math.sin(rot)
    return list(zip((cx + c * x - s * y).tolist(), (cy + s * x + c * y).tolist(), strict=True))


def _faceted(cv: Canvas, cx: float, cy: float, size: float, shape: str = "") -> None:
    """One crystal: a polygon with facet lines, dark sharp edges and a highlight."""
    rng = cv.rng
    dark, light = cv.layer("dark"), cv.layer("light")
    if not shape:
        shape = str(rng.choice(["hex", "rhomb", "prism", "square", "bipyramid"]))
    n, aspect = {
        "hex": (6, rng.uniform(0.75, 1.0)),
        "rhomb": (4, rng.uniform(0.5, 0.85)),
        "prism": (6, rng.uniform(0.25, 0.5)),
        "square": (4, 1.0),
        "bipyramid": (8, rng.uniform(0.5, 0.8)),
        "plate": (4, rng.uniform(0.12, 0.35)),
    }[shape]
    rot = rng.uniform(0, math.pi)
    pts = _polygon(cx, cy, size, n, aspect, rot, rng)
    face_light = int(rng.integers(20, 90))
    face_dark = int(rng.integers(0, 70)) if rng.random() < 0.4 else 0
    dark.polygon(pts, fill=face_dark)
    light.polygon(pts, fill=face_light)
    edge = cv.width(rng.uniform(3.0, 5.5))
    tone = int(rng.integers(150, 245))
    # Facets: lines from an off-centre apex to some vertices, one facet shaded.
    ax = cx + rng.normal(0, 0.18) * size
    ay = cy + rng.normal(0, 0.18) * size
    k = int(rng.integers(n))
    shade = [pts[k], pts[(k + 1) % n], (ax, ay)]
    dark.polygon(shade, fill=int(rng.integers(40, 140)))
    light.polygon(shade, fill=0)
    for j in range(0, n, int(rng.integers(1, 3))):
        dark.line([(ax, ay), pts[j]], fill=tone // 2, width=max(1, edge - 1))
    dark.line([*pts, pts[0]], fill=tone, width=edge, joint="curve")
    # A specular highlight just inside one or two edges.
    for _ in range(int(rng.integers(1, 3))):
        j = int(rng.integers(n))
        (x0, y0), (x1, y1) = pts[j], pts[(j + 1) % n]
        ix, iy = (ax - (x0 + x1) / 2) * 0.12, (ay - (y0 + y1) / 2) * 0.12
        light.line(
            [(x0 + ix, y0 + iy), (x1 + ix, y1 + iy)],
            fill=int(rng.integers(120, 230)),
            width=max(1, edge - 1),
        )


def _needles(cv: Canvas, count: int, radiating: bool) -> None:
    rng = cv.rng
    dark, light = cv.layer("dark"), cv.layer("light")
    r = cv.drops[0][2] if cv.drops else 0.3 * cv.s
    centres = [cv.point_in_drop(0.6) for _ in range(int(rng.integers(1, 4)))]
    for i in range(count):
        length = r * rng.uniform(0.1, 0.4)
        phi = rng.uniform(0, 2 * math.pi)
        if radiating:
            ox, oy = centres[i % len(centres)]
            x0 = ox + rng.normal(0, 0.02 * r)
            y0 = oy + rng.normal(0, 0.02 * r)
        else:
            x0, y0 = cv.point_in_drop(0.8)
        x1, y1 = x0 + length * math.cos(phi), y0 + length * math.sin(phi)
        width = cv.width(rng.uniform(3.0, 6.0))
        dark.line([(x0, y0), (x1, y1)], fill=int(rng.integers(140, 235)), width=width)
        if rng.random() < 0.5:
            off = max(1.0, width * 0.8)
            light.line(
                [(x0 + off, y0 - off), (x1 + off, y1 - off)],
                fill=int(rng.integers(60, 180)),
                width=max(1, width - 1),
            )


def _spherulite(cv: Canvas, cx: float, cy: float, radius: float) -> None:
    rng = cv.rng
    dark, light = cv.layer("dark"), cv.layer("light")
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    dark.ellipse(box, fill=int(rng.integers(30, 110)), outline=int(rng.integers(150, 230)),
                 width=cv.width(4.0))
    spokes = int(rng.integers(10, 28))
    for k in range(spokes):
        phi = 2 * math.pi * k / spokes + rng.normal(0, 0.1)
        dark.line(
            [(cx, cy), (cx + radius * math.cos(phi), cy + radius * math.sin(phi))],
            fill=int(rng.integers(120, 220)),
            width=cv.width(3.0),
        )
    light.ellipse([cx - radius * 0.3, cy - radius * 0.5, cx, cy - radius * 0.2], fill=90)


def _coarse_grain(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Grain whose particles are about ``cell`` pixels across, shape (h, w)."""
    if cell <= 1.5:
        return _grain(rng, h, w)
    hs, ws = max(2, math.ceil(h / (cell / 2.5))), max(2, math.ceil(w / (cell / 2.5)))
    return _enlarge(_grain(rng, hs, ws), h, w)


def _precipitate(cv: Canvas, amount: float, coverage: float, cloudiness: float) -> None:
    """Granular brownish matter in the drop; ``coverage`` in (0, 1) sets how much.

    Particles are 4 to 9 pixels of a 960-pixel frame across, so that they still show
    as texture when the image is shrunk to the small models' input.
    """
    rng = cv.rng
    h, w = cv.h, cv.w
    grain = _coarse_grain(rng, h, w, rng.uniform(4.0, 9.0) * cv.px)
    threshold = float(np.interp(coverage, [0.0, 1.0], [2.6, -0.2]))
    sharp = rng.uniform(1.2, 2.5)
    specks = np.clip((grain - threshold) * sharp, 0.0, 1.0)
    cloud = _smooth_noise(rng, h, w, rng.uniform(3, 9))
    density = np.clip(cloud * rng.uniform(0.4, 1.0) + rng.uniform(0.1, 0.8), 0.0, 1.0)
    absorb = specks * density * np.float32(amount)
    if cloudiness > 0:
        absorb += np.clip(cloud, 0.0, None) * np.float32(cloudiness)
    cv.add_brown(absorb)


def _dots(cv: Canvas, count: int, rmin: float, rmax: float, layer: str = "dark") -> None:
    rng = cv.rng
    draw = cv.layer(layer)
    clump = cv.point_in_drop(0.6)
    for _ in range(count):
        if rng.random() < 0.4:
            x = clump[0] + rng.normal(0, 0.05 * cv.s)
            y = clump[1] + rng.normal(0, 0.05 * cv.s)
        else:
            x, y = cv.point_in_drop(0.9)
        r = rng.uniform(rmin, rmax) * cv.px
        draw.ellipse([x - r, y - r * rng.uniform(0.6, 1.0), x + r, y + r],
                     fill=int(rng.integers(110, 230)))


def _wrinkles(
    cv: Canvas, count: int, layer: str, width: tuple[float, float] = (1.0, 3.5)
) -> None:
    """Random-walk lines: skin folds or fibres, ``width`` pixels of a 960 frame."""
    rng = cv.rng
    draw = cv.layer(layer)
    for _ in range(count):
        x, y = cv.point_in_drop(0.8)
        phi = rng.uniform(0, 2 * math.pi)
        pts = [(x, y)]
        step = rng.uniform(6, 20) * cv.px
        for _ in range(int(rng.integers(8, 30))):
            phi += rng.normal(0, 0.35)
            x += step * math.cos(phi)
            y += step * math.sin(phi)
            pts.append((x, y))
        draw.line(pts, fill=int(rng.integers(70, 200)), width=cv.width(rng.uniform(*width)),
                  joint="curve")


def _oil(cv: Canvas) -> None:
    """Phase separation: round droplets with dark rims and a bright lens highlight."""
    rng = cv.rng
    dark, light = cv.layer("dark"), cv.layer("light")
    r_drop = cv.drops[0][2] if cv.drops else 0.3 * cv.s
    many = rng.random() < 0.6
    count = int(rng.integers(25, 200)) if many else int(rng.integers(3, 15))
    scale = rng.uniform(0.01, 0.04) if many else rng.uniform(0.04, 0.18)
    filled = rng.random() < 0.35
    for _ in range(count):
        x, y = cv.point_in_drop(0.85)
        r = max(1.5, r_drop * scale * rng.lognormal(0, 0.4))
        box = [x - r, y - r, x + r, y + r]
        if filled:
            dark.ellipse(box, fill=int(rng.integers(140, 230)))
        else:
            dark.ellipse(box, fill=0, outline=int(rng.integers(110, 220)),
                         width=max(1, round(r * rng.uniform(0.12, 0.3))))
        light.ellipse([x - r * 0.45, y - r * 0.5, x + r * 0.05, y - r * 0.05],
                      fill=int(rng.integers(40, 140)))


def _draw_content(cv: Canvas, class_name: str, variant: str, hints: frozenset[str]) -> None:
    rng = cv.rng
    r_drop = cv.drops[0][2] if cv.drops else 0.3 * cv.s
    if class_name == "clear":
        if variant == "dust" or rng.random() < 0.15:
            _wrinkles(cv, int(rng.integers(1, 4)), "dark")
            _dots(cv, int(rng.integers(0, 5)), 1.0, 3.0)
        return
    if class_name == "precipitate":
        heavy = "heavy" in hints or rng.random() < 0.3
        light = "light" in hints and not heavy
        level = rng.uniform(0.6, 0.95) if heavy else rng.uniform(0.3, 0.55 if light else 0.8)
        if variant == "granular":
            _precipitate(cv, rng.uniform(0.6, 1.0), level, rng.uniform(0.0, 0.3) * level)
        elif variant == "amorphous":
            _precipitate(cv, rng.uniform(0.35, 0.6), level * 0.7, rng.uniform(0.4, 0.8) * level)
        elif variant == "specks":
            _dots(cv, int(40 + 400 * level * rng.uniform(0.3, 1.0)), 3.0, 7.0)
            _precipitate(cv, rng.uniform(0.3, 0.5), level * 0.4, 0.0)
        else:
            _wrinkles(cv, int(rng.integers(4, 12)), "brown", width=(4.0, 8.0))
            _precipitate(cv, rng.uniform(0.25, 0.45), level * 0.5, rng.uniform(0.1, 0.25))
        if "oil" in hints:
            _oil(cv)
        return
    if class_name == "crystals":
        if "precipitate" in hints or rng.random() < 0.25:
            _precipitate(cv, rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.4), 0.0)
        if variant == "faceted":
            big = rng.random() < 0.5
            count = int(rng.integers(1, 4)) if big else int(rng.integers(3, 30))
            size_lo, size_hi = (0.08, 0.3) if big else (0.035, 0.1)
            for _ in range(count):
                x, y = cv.point_in_drop(0.8)
                _faceted(cv, x, y, r_drop * rng.uniform(size_lo, size_hi))
        elif variant == "needles":
            _needles(cv, int(rng.integers(6, 60)), radiating=rng.random() < 0.6)
        elif variant == "plates":
            for _ in range(int(rng.integers(1, 8))):
                x, y = cv.point_in_drop(0.7)
                for _ in range(int(rng.integers(1, 4))):
                    size = r_drop * rng.uniform(0.06, 0.25)
                    _faceted(cv, x + rng.normal(0, size * 0.3), y + rng.normal(0, size * 0.3),
                             size, shape="plate")
        elif variant == "cluster":
            for _ in range(int(rng.integers(1, 4))):
                x, y = cv.point_in_drop(0.6)
                spread = r_drop * rng.uniform(0.05, 0.2)
                for _ in range(int(rng.integers(4, 16))):
                    _faceted(cv, x + rng.normal(0, spread), y + rng.normal(0, spread),
                             r_drop * rng.uniform(0.025, 0.09))
        elif variant == "micro":
            x0, y0 = cv.point_in_drop(0.5)
            spread = r_drop * rng.uniform(0.15, 0.5)
            for _ in range(int(rng.integers(30, 120))):
                if rng.random() < 0.7:
                    x, y = x0 + rng.normal(0, spread), y0 + rng.normal(0, spread)
                else:
                    x, y = cv.point_in_drop(0.85)
                size = max(5.0 * cv.px, r_drop * rng.uniform(0.015, 0.035))
                _faceted(cv, x, y, size, shape=str(rng.choice(["square", "rhomb", "hex"])))
        else:
            for _ in range(int(rng.integers(1, 14))):
                x, y = cv.point_in_drop(0.8)
                _spherulite(cv, x, y, r_drop * rng.uniform(0.05, 0.14))
        return
    # other: process failures and phase separation
    if variant == "oil":
        _oil(cv)
    elif variant == "blur":
        cv.blur = rng.uniform(14, 40)
        if rng.random() < 0.5:
            _precipitate(cv, rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.6), 0.1)
    elif variant == "dark":
        cv.exposure = rng.uniform(0.08, 0.3)
    elif variant == "overexposed":
        cv.wash = rng.uniform(0.6, 0.95)
    elif variant == "no_drop" and rng.random() < 0.4:
        _dots(cv, int(rng.integers(1, 6)), 2.0, 6.0)


# --------------------------------------------------------------------------- scene


def _geometry(cv: Canvas, variant: str) -> dict:
    """Well, rim and drop placement (pixels), varied per image."""
    rng, w, h, s = cv.rng, cv.w, cv.h, cv.s
    oil = cv.look.under_oil
    zoomed = (not oil) and rng.random() < 0.18
    if oil:
        r_in = s * rng.uniform(0.36, 0.5)
    elif zoomed:
        r_in = s * rng.uniform(0.62, 0.95)
    else:
        r_in = s * rng.uniform(0.4, 0.52)
    g = {
        "cx": w / 2 + rng.normal(0, 0.035 * s),
        "cy": h / 2 + rng.normal(0, 0.035 * s),
        "r_in": r_in,
        "r_out": r_in * rng.uniform(1.2, 1.6),
        "outer_aspect": rng.uniform(0.9, 1.1),
        "square": rng.uniform(2.2, 6.0) if not oil else rng.uniform(2.0, 3.5),
    }
    drops = []
    if variant != "no_drop":
        if oil:
            r = r_in * rng.uniform(0.55, 0.92)
            off = (r_in - r) * rng.uniform(0.0, 0.6)
        else:
            r = r_in * (rng.uniform(0.45, 0.8) if zoomed else rng.uniform(0.38, 0.8))
            off = (r_in - r) * rng.uniform(0.1, 1.2)
        count = 1
        if variant == "dispensing":
            mode = rng.integers(3)
            if mode == 0:  # off-centre, spilling onto the wall
                off = r_in - r * rng.uniform(0.1, 0.6)
            elif mode == 1:  # split into several small drops
                count = int(rng.integers(2, 5))
                r *= rng.uniform(0.3, 0.5)
            else:  # a tiny or smeared drop
                r *= rng.uniform(0.15, 0.4)
        for _ in range(count):
            phi = rng.uniform(0, 2 * math.pi)
            d = off if count == 1 else rng.uniform(0.2, 0.8) * r_in
            aspect = rng.uniform(0.7, 1.0) if variant != "dispensing" else rng.uniform(0.35, 1.0)
            drops.append(
                (g["cx"] + d * math.cos(phi), g["cy"] + d * math.sin(phi), r, aspect)
            )
    g["drops"] = drops
    cv.geometry = g
    return g


def _superellipse(cx, cy, rx, ry, p, points=96) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = rx * np.sign(c) * np.abs(c) ** (2 / p)
    y = ry * np.sign(s) * np.abs(s) ** (2 / p)
    return np.stack([cx + x, cy + y], axis=1)


def _scene(cv: Canvas, class_name: str, variant: str, hints: frozenset[str]) -> np.ndarray:
    """Full-resolution luminance (float32, about 0..1.2) of plate, well, drop and content.

    Geometry is composed at half resolution and enlarged once; content layers are
    full resolution. Brownish matter is left in ``cv.brown`` for the colour stage.
    """
    rng, h, w, s, look = cv.rng, cv.h, cv.w, cv.s, cv.look
    g = _geometry(cv, variant)
    cx, cy, r_in = g["cx"], g["cy"], g["r_in"]
    hh, wh = max(2, -(-h // 2)), max(2, -(-w // 2))
    half = np.float32(0.5)

    inner = _raster([_blob(cx, cy, r_in, rng, 1.0, 0.004) * half], hh, wh, 1)
    plate = np.float32(rng.uniform(0.7, 1.0))
    if look.under_oil:
        # Oil and plate plastic surround the well: a darker grey field.
        lum = np.full((hh, wh), plate * np.float32(rng.uniform(0.15, 0.45)), np.float32)
    else:
        outer_poly = _superellipse(
            cx, cy, g["r_out"], g["r_out"] * g["outer_aspect"], g["square"]
        )
        outer = _raster([outer_poly * half], hh, wh, 1)
        rim = np.float32(rng.uniform(0.015, 0.08)) + np.float32(rng.uniform(0.0, 0.07)) * np.abs(
            _grain(rng, hh, wh)
        )
        lum = plate + outer * (rim - plate)

    # Floor with radial streaks (the fibrous look of the plastic and the drop).
    dcx, dcy = g["drops"][0][:2] if g["drops"] else (cx, cy)
    th = np.arctan2(
        np.arange(hh, dtype=np.float32)[:, None] * 2 - np.float32(dcy),
        np.arange(wh, dtype=np.float32)[None, :] * 2 - np.float32(dcx),
    )
    bins = 900
    prof = rng.standard_normal(bins).astype(np.float32)
    prof = (prof + np.roll(prof, 1)) * np.float32(0.5)
    idx = ((th + np.float32(math.pi)) * np.float32(bins / (2 * math.pi))).astype(np.int32)
    streak_amp = rng.uniform(0.006, 0.03) * (3.0 if variant == "streaky" else 1.0)
    floor = np.float32(rng.uniform(0.68, 0.88)) + prof[idx % bins] * np.float32(streak_amp)
    lum += inner * (floor - lum)
    # The well wall: a thin bright or dark line where the floor meets the rim.
    wall = inner * (1.0 - inner) * np.float32(4.0)
    lum += wall * np.float32(rng.uniform(-0.3, 0.45))
    if look.under_oil:
        ring = _raster([_blob(cx, cy, r_in, rng, 1.0, 0.004) * half], hh, wh, 4,
                       blur=0.03 * s * 0.5)
        lum *= 1.0 - np.float32(rng.uniform(0.2, 0.6)) * np.clip((ring - inner) * 2.5, 0, 1)

    # Drops: body, meniscus shadow on one side, a bright or dark edge line.
    if g["drops"]:
        bodies, cores = [], []
        for dx, dy, r, aspect in g["drops"]:
            body = _blob(dx, dy, r, rng, aspect, rng.uniform(0.02, 0.1))
            phi = rng.uniform(0, 2 * math.pi)
            t = rng.uniform(0.04, 0.25)
            shift = np.array([math.cos(phi), math.sin(phi)]) * r * t * rng.uniform(0.8, 1.3)
            core = (body - [dx, dy]) * (1 - t) + [dx, dy] + shift
            bodies.append(body * half)
            cores.append(core * half)
            cv.drops.append((dx, dy, r, aspect))
        d_mask = _raster(bodies, hh, wh, 1) * inner
        core_mask = _raster(cores, hh, wh, 4, blur=rng.uniform(0.006, 0.03) * s * 0.5)
        band = np.clip(d_mask - core_mask, 0, 1)
        depth = rng.uniform(0.35, 0.95) if not look.under_oil else rng.uniform(0.4, 0.8)
        tone = np.float32(rng.uniform(0.92, 1.08))
        lum *= 1.0 + d_mask * (tone - 1.0) - np.float32(depth) * band
        edge = d_mask * (1 - d_mask) * np.float32(4.0)
        lum += edge * np.float32(rng.uniform(-0.3, 0.3))
    else:
        cv.drop = False
        d_mask = inner
    lum = np.array(_enlarge(lum, h, w))  # writable copy

    _draw_content(cv, class_name, variant, hints)
    layers = {name: cv.layer_array(name) for name in ("dark", "light", "brown")}
    if cv.brown is not None or any(v is not None for v in layers.values()):
        cv.mask = _enlarge(d_mask, h, w)
    if layers["brown"] is not None:
        cv.add_brown(layers["brown"] * np.float32(0.8))
    if layers["dark"] is not None:
        lum *= 1.0 - layers["dark"] * cv.mask * np.float32(rng.uniform(0.6, 0.95))
    if layers["light"] is not None:
        lum += layers["light"] * cv.mask * np.float32(rng.uniform(0.25, 0.5))
    if cv.brown is not None:
        cv.brown *= cv.mask
        np.clip(cv.brown, 0.0, 0.95, out=cv.brown)
    return lum


def _shading(cv: Canvas, hl: int, wl: int) -> np.ndarray:
    """Low-resolution lighting: a tilt, soft bumps and the well's vignette."""
    rng, h, w, s = cv.rng, cv.h, cv.w, cv.s
    g = cv.geometry
    ys = (np.arange(hl, dtype=np.float32)[:, None] + 0.5) * np.float32(h / hl)
    xs = (np.arange(wl, dtype=np.float32)[None, :] + 0.5) * np.float32(w / wl)
    rr = np.sqrt((xs - g["cx"]) ** 2 + (ys - g["cy"]) ** 2) / np.float32(g["r_in"])
    tilt = rng.normal(0, 0.08, 2)
    shade = 1.0 + tilt[0] * (xs - w / 2) / s + tilt[1] * (ys - h / 2) / s
    shade = shade + 0.05 * _smooth_noise(rng, hl, wl, rng.uniform(2, 5))
    vig = rng.uniform(0.1, 0.45)
    shade = shade * (1.0 - vig * np.clip((rr - 0.55) / 0.45, 0, 1) ** 2)
    return shade.astype(np.float32)


def render(
    class_name: str,
    hints: frozenset[str],
    look: Look,
    rng: np.random.Generator,
    variant: str | None = None,
) -> np.ndarray:
    """Render one drop image.

    Args:
        class_name: one of MARCO's classes (``clear``, ``crystals``, ``other``,
            ``precipitate``).
        hints: words from :func:`hints_for` that favour some variants of the class.
        look: frame size, colour and plate type of the imager.
        rng: the image's own generator; the same state gives the same pixels.
        variant: force a variant of :data:`VARIANTS` instead of drawing one.

    Returns:
        ``uint8`` array, shape (height, width, 3) for colour looks, else (height, width).
    """
    variant = variant or pick_variant(class_name, hints, rng)
    cv = Canvas(look, rng)
    lum = _scene(cv, class_name, variant, hints)
    h, w = cv.h, cv.w

    # Optics and exposure, drawn per image whatever the class.
    focus = cv.blur if cv.blur else (rng.uniform(1.5, 4.0) if rng.random() < 0.3 else 0.0)
    if focus:
        lum = _soften(lum, focus * cv.px)
    gain = min(1.2, max(0.6, math.exp(rng.normal(0.0, 0.2)))) * cv.exposure
    contrast = rng.uniform(0.7, 1.25)
    lum *= np.float32(contrast * gain)
    lum += np.float32(0.55 * gain * (1.0 - contrast))
    if cv.wash:
        lum *= np.float32(1 - cv.wash)
        lum += np.float32(cv.wash * rng.uniform(0.95, 1.15))
    lum += _grain(rng, h, w) * np.float32(rng.uniform(0.003, 0.022))

    hl, wl = max(2, -(-h // LOW)), max(2, -(-w // LOW))
    shade = _shading(cv, hl, wl)
    if look.colour:
        # A smooth colour cast: pink or green overall, with slowly varying hue.
        phase = _smooth_noise(rng, hl, wl, rng.uniform(1.5, 4)) * rng.uniform(0.8, 2.5)
        phase += rng.uniform(0, 2 * math.pi)
        amp = rng.uniform(0.015, 0.06) if rng.random() < 0.85 else rng.uniform(0.1, 0.25)
        base = 1.0 + np.array([0.08, -0.12, 0.07]) * rng.uniform(-0.9, 1.6)
        base += rng.normal(0, 0.025, 3)
        out = np.empty((h, w, 3), dtype=np.float32)
        for c in range(3):
            tint = shade * (base[c] + amp * np.cos(phase - c * 2 * math.pi / 3))
            np.multiply(lum, _enlarge(tint.astype(np.float32), h, w), out=out[..., c])
        if cv.brown is not None:
            out *= 1.0 - cv.brown[..., None] * BROWN
    else:
        out = lum * _enlarge(shade, h, w)
        if cv.brown is not None:
            out *= 1.0 - cv.brown * np.float32(0.75)
    out *= np.float32(255.0)
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    """Encode an image array as JPEG (quality 88) or PNG bytes, deterministically."""
    mode = "RGB" if pixels.ndim == 3 else "L"
    img = Image.fromarray(pixels, mode=mode)
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=88)
    elif fmt == "png":
        img.save(buf, format="PNG", compress_level=3)
    else:
        raise ValueError(f"unknown image format {fmt!r}; expected 'jpeg' or 'png'")
    return buf.getvalue()
