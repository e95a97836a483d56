"""How far overall brightness alone gets on the synthetic set: a check that it is not trivial.

Generates a fresh synthetic data set (by default 1500 images at a quarter of full
size), reduces every image to two numbers, the mean and the standard deviation of
its grey levels, and trains simple classifiers on a stratified train split (the
method of :mod:`components.tools.brightness_baseline`, which ``marco demo`` also runs on
its own data set and split). The held-out accuracy should stay well under 60% (the
majority-class rate is printed for context); a classifier that needs only brightness
would make the benchmark data useless for judging a CNN.

Run: ``.venv/bin/python benchmarks/brightness_baseline.py [--images 1500 --scale 0.25]``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np

import components  # noqa: F401  (process set-up before anything else)
from components.catalogue import load_catalogue
from components.names import CLASS_NAMES
from components.tools.brightness_baseline import FEATURES, brightness_features, score_classifiers
from components.tools.synth.writer import generate, make_plan

RESULTS = Path(__file__).resolve().parent / "results" / "brightness_baseline.json"
TARGET = 0.60


def evaluate(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """Held-out accuracy of the brightness-only classifiers on a stratified 70/30 split."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.3, random_state=seed, stratify=labels
    )
    return score_classifiers(x_train, y_train, x_test, y_test)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--images", type=click.IntRange(min=20), default=1500, show_default=True,
              help="Images to generate.")
@click.option("--scale", type=click.FloatRange(0.05, 1.0), default=0.25, show_default=True,
              help="Size factor of the generated images.")
@click.option("--seed", type=click.IntRange(min=0), default=2018, show_default=True,
              help="Seed of the data set and of the train/test split.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Rendering processes (default: all cores).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS,
              show_default=True, help="Where to write the JSON result.")
def main(images: int, scale: float, seed: int, workers: int | None, output: Path) -> None:
    """Score a brightness-only (mean, std) classifier on a fresh synthetic set."""
    catalogue = load_catalogue()
    plan = make_plan(catalogue, images, seed, scale)
    items = list(plan.items())
    with tempfile.TemporaryDirectory(prefix="marco-brightness-") as tmp:
        start = time.perf_counter()
        generate(tmp, images, seed, catalogue=catalogue, scale=scale, workers=workers,
                 progress=True)
        elapsed = time.perf_counter() - start
        features = brightness_features([Path(tmp) / it.file for it in items])
    labels = np.array([CLASS_NAMES.index(it.class_name) for it in items])
    result = evaluate(features, labels, seed)
    result.update(
        {
            "images": images,
            "scale": scale,
            "seed": seed,
            "features": list(FEATURES),
            "target": f"best_accuracy < {TARGET}",
            "passed": result["best_accuracy"] < TARGET,
            "generation_seconds": round(elapsed, 2),
            "class_means": {
                c: [round(float(v), 2) for v in features[labels == k].mean(axis=0)]
                for k, c in enumerate(CLASS_NAMES)
            },
        }
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, acc in result["accuracy"].items():
        click.echo(f"{name:>20}: {acc:.3f}")
    click.echo(
        f"brightness-only accuracy {result['best_accuracy']:.3f} (target < {TARGET}); "
        f"majority class '{result['majority_class']}' rate {result['majority_rate']:.3f}"
    )
    click.echo(f"wrote {output}")


if __name__ == "__main__":
    main()
