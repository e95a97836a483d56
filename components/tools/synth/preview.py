"""A PNG grid of synthetic drops per class and institution beside real MARCO photos."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from components.catalogue import Catalogue
from components.names import CLASS_NAMES
from components.tools.synth.render import Look, hints_for, render

REAL_COLUMNS = 2  # real photos shown per class


def _real_images(real_dir: Path | None) -> dict[str, list[Path]]:
    """Real photos by class from ``labels.csv`` (filename,label[,source])."""
    found: dict[str, list[Path]] = {c: [] for c in CLASS_NAMES}
    if real_dir is None:
        return found
    labels = Path(real_dir) / "labels.csv"
    if not labels.is_file():
        return found
    with labels.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = (row.get("label") or "").strip()
            path = Path(real_dir) / (row.get("filename") or "")
            if label in found and path.is_file():
                found[label].append(path)
    return found


def make_preview(
    out: Path | str,
    *,
    seed: int = 0,
    real_dir: Path | str | None = None,
    catalogue: Catalogue | None = None,
    scale: float = 0.35,
) -> dict:
    """Write the preview PNG.

    Args:
        out: the PNG file to write.
        seed: seed of the synthetic images.
        real_dir: folder with real drops and their ``labels.csv``; when missing the
            figure says so and shows synthetic images only.
        catalogue: institutions to show (default: the project's catalogue).
        scale: size factor of the rendered images.

    Returns:
        Counts of synthetic and real images drawn, and whether real drops were missing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if catalogue is None:
        from components.catalogue import load_catalogue

        catalogue = load_catalogue()
    real = _real_images(Path(real_dir) if real_dir is not None else None)
    real_missing = not any(real.values())
    sources = list(catalogue)
    ncols = len(sources) + REAL_COLUMNS
    fig, axes = plt.subplots(
        len(CLASS_NAMES), ncols, figsize=(2.6 * ncols, 2.2 * len(CLASS_NAMES) + 0.6),
        squeeze=False,
    )
    synthetic = shown_real = 0
    for r, class_name in enumerate(CLASS_NAMES):
        for c, source in enumerate(sources):
            ax = axes[r][c]
            labels = [lab for lab in source.labels if lab.class_name == class_name]
            if not labels:
                ax.text(0.5, 0.5, "no label", ha="center", va="center")
                ax.axis("off")
                continue
            rng = np.random.default_rng([seed, r, c])
            label = labels[int(rng.integers(len(labels)))]
            colour = source.imaging.colour == "rgb" or (
                source.imaging.colour == "mixed" and rng.random() < 0.5
            )
            look = Look(
                max(16, round(source.imaging.width * scale)),
                max(16, round(source.imaging.height * scale)),
                colour,
                "oil" in source.setup.lower(),
            )
            pixels = render(class_name, hints_for(label.native, label.description), look, rng)
            ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(f"{source.code}: {label.native}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            synthetic += 1
            if c == 0:
                ax.set_ylabel(class_name, fontsize=11)
        for k in range(REAL_COLUMNS):
            ax = axes[r][len(sources) + k]
            ax.set_xticks([])
            ax.set_yticks([])
            paths = real[class_name]
            if k < len(paths):
                with Image.open(paths[k]) as img:
                    img.thumbnail((480, 480))
                    ax.imshow(np.asarray(img.convert("RGB")))
                ax.set_title(f"REAL {paths[k].name}", fontsize=8, color="darkred")
                shown_real += 1
            else:
                message = "real drops not found" if real_missing else "no more real images"
                ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=8)
    title = f"Synthetic drops (seed {seed}) by class and institution; right: real MARCO photos"
    if real_missing:
        title += f"\n(no real drops found at {real_dir})"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return {"synthetic": synthetic, "real": shown_real, "real_missing": real_missing}
