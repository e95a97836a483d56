"""Writes the evaluation report: Markdown for people, PNG figures, JSON for machines."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from components.names import CLASS_NAMES
from components.tools.report import tables
from components.tools.report.overrides import label_overrides
from components.tools.report.results import EvaluationResults

MARKDOWN = "report.md"
JSON = "report.json"
FIGURES = {
    "confusion": "table4_confusion.png",
    "roc": "roc_curves.png",
    "institutions": "institution_accuracy.png",
}


def _matrix_json(matrix: np.ndarray) -> dict[str, dict[str, float | None]]:
    return {
        true: {
            pred: (None if math.isnan(matrix[i, j]) else round(float(matrix[i, j]), 6))
            for j, pred in enumerate(tables.PAPER_ORDER)
        }
        for i, true in enumerate(tables.PAPER_ORDER)
    }


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _model_facts(overall) -> dict:
    """What the comparison shows of one model: accuracy, crystals, operating points."""
    crystals = overall.roc.get("crystals")
    decisions = tables.precision_recall(overall.confusion)["crystals"]
    return {
        "examples": int(overall.example_count),
        "accuracy": _finite(overall.accuracy),
        "crystal_recall": _finite(decisions["recall"]),
        "crystal_precision": _finite(decisions["precision"]),
        "crystal_roc_auc": _finite(overall.auc.get("crystals")),
        f"crystal_recall_at_fpr_below_{tables.FPR_BUDGET}": (
            tables.recall_at_fpr(crystals) if crystals else None),
        f"crystal_fpr_at_recall_{tables.RECALL_TARGET}": (
            tables.fpr_at_recall(crystals) if crystals else None),
    }


def summarise(results: EvaluationResults, context: dict[str, Any] | None = None) -> dict:
    """Everything the report shows, as JSON-ready data."""
    overall = results.overall
    crystals = overall.roc.get("crystals")
    decisions = tables.precision_recall(overall.confusion)
    return {
        "evaluation": results.path,
        "context": dict(context or {}),
        "blessed": results.blessed,
        "threshold_failures": results.failures,
        "examples": int(overall.example_count),
        "accuracy": _finite(overall.accuracy),
        "class_order": list(tables.PAPER_ORDER),
        "table4_confusion_by_true_label": _matrix_json(tables.table4(results)),
        "table5_std_across_institutions": _matrix_json(tables.table5(results)),
        "confusion_counts": {
            true: {pred: int(overall.confusion[i, j]) for j, pred in enumerate(CLASS_NAMES)}
            for i, true in enumerate(CLASS_NAMES)
        },
        # From the confusion counts above (the top-scoring class of each image), so
        # that the two always agree, a model that gives one class to everything too.
        "per_class": {
            name: {
                "precision": _finite(decisions[name]["precision"]),
                "recall": _finite(decisions[name]["recall"]),
                "roc_auc": _finite(overall.auc.get(name)),
            }
            for name in CLASS_NAMES
        },
        "crystal_operating_points": {
            f"recall_at_fpr_below_{tables.FPR_BUDGET}": (
                tables.recall_at_fpr(crystals) if crystals else None),
            f"fpr_at_recall_{tables.RECALL_TARGET}": (
                tables.fpr_at_recall(crystals) if crystals else None),
        },
        "institutions": {
            code: {"examples": int(s.example_count), "accuracy": _finite(s.accuracy)}
            for code, s in results.institutions.items()
        },
        "institution_accuracy_spread": tables.accuracy_spread(results),
        # Examples whose label an expert's override set (None: not found for this run).
        "label_overrides": label_overrides(results.path),
        # The candidate beside the Evaluator's baseline (None: there was none).
        "comparison": None if results.baseline is None else {
            "candidate": _model_facts(overall), "baseline": _model_facts(results.baseline),
        },
    }


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _table(matrix: np.ndarray, paper: np.ndarray | None = None) -> list[str]:
    header = "| true \\ predicted | " + " | ".join(tables.PAPER_ORDER) + " |"
    lines = [header, "|---" * (len(tables.PAPER_ORDER) + 1) + "|"]
    for i, name in enumerate(tables.PAPER_ORDER):
        cells = []
        for j in range(len(tables.PAPER_ORDER)):
            cell = _pct(matrix[i, j])
            if paper is not None:
                cell += f" ({_pct(paper[i, j])})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown(summary: dict, results: EvaluationResults) -> str:
    t4 = tables.table4(results)
    t5 = tables.table5(results)
    spread = summary["institution_accuracy_spread"]
    context = summary["context"]
    lines = ["# MARCO evaluation report", ""]
    lines.append(f"- Overall accuracy: **{_pct(summary['accuracy'])}** on "
                 f"{summary['examples']} eval-split images")
    if spread["std"] is not None:
        lines.append(f"- Across {len(summary['institutions'])} institutions: accuracy "
                     f"{_pct(spread['min'])} to {_pct(spread['max'])}, standard deviation "
                     f"{_pct(spread['std'])}")
    blessed = {True: "blessed", False: "not blessed", None: "no thresholds checked"}
    lines.append(f"- Blessing: {blessed[summary['blessed']]}")
    for failure in summary["threshold_failures"]:
        lines.append(f"  - {failure}")
    for key, label in (("pushed_to", "Pushed to"), ("not_pushed_reason", "Not pushed"),
                       ("preset", "Preset"),
                       ("baseline_accuracy", "Brightness-only baseline accuracy")):
        if context.get(key) is not None:
            value = context[key]
            lines.append(f"- {label}: {_pct(value) if isinstance(value, float) else value}")
    lines.append(f"- TFMA output: `{summary['evaluation']}`")
    lines += ["", "## Table 4: confusion matrix, normalised by true label", "",
              "Fraction of each true class given each label (the paper's figure in "
              "brackets).", ""]
    lines += _table(t4, tables.PAPER_TABLE4)
    lines += ["", f"![Table 4]({FIGURES['confusion']})", "",
              "## Table 5: standard deviation across institutions", "",
              "For each cell of Table 4, the standard deviation of that fraction over the "
              "institutions (population standard deviation; the paper's figure in "
              "brackets).", ""]
    lines += _table(t5, tables.PAPER_TABLE5)
    lines += ["", "## Per class (one against the rest)", "",
              "| class | precision | recall | ROC AUC |", "|---|---|---|---|"]
    for name in CLASS_NAMES:
        facts = summary["per_class"][name]
        auc = facts["roc_auc"]
        lines.append(f"| {name} | {_pct(facts['precision'])} | {_pct(facts['recall'])} | "
                     f"{'n/a' if auc is None else f'{auc:.3f}'} |")
    points = summary["crystal_operating_points"]
    lines += ["", "## Crystal operating points", ""]
    at_fpr = points[f"recall_at_fpr_below_{tables.FPR_BUDGET}"]
    at_recall = points[f"fpr_at_recall_{tables.RECALL_TARGET}"]
    if at_fpr and at_fpr["recall"] is not None:
        lines.append(f"- Recall at under {_pct(tables.FPR_BUDGET, 0)} false positives: "
                     f"{_pct(at_fpr['recall'])} (threshold {at_fpr['threshold']:.3f}; the "
                     "paper: 98.7%)")
    if at_recall and at_recall["recall"] is not None:
        lines.append(f"- False positives at {_pct(tables.RECALL_TARGET, 0)} recall: "
                     f"{_pct(at_recall['false_positive_rate'])} (threshold "
                     f"{at_recall['threshold']:.3f}; the paper: under 1.6%)")
    lines += ["", f"![ROC curves]({FIGURES['roc']})", ""]
    lines += _comparison(summary.get("comparison"))
    lines += ["## Accuracy per institution", "",
              "| institution | eval images | accuracy |", "|---|---|---|"]
    for code, facts in summary["institutions"].items():
        lines.append(f"| {code} | {facts['examples']} | {_pct(facts['accuracy'])} |")
    lines += ["", f"![Accuracy per institution]({FIGURES['institutions']})", ""]
    overridden = summary.get("label_overrides")
    if overridden is not None:
        lines += ["## Labels set by experts' overrides", "",
                  "Examples of the run (every split) whose label came from the catalogue's "
                  "overrides files rather than the native label, by the class they were given.",
                  ""]
        if overridden:
            lines += ["| institution | " + " | ".join(CLASS_NAMES) + " | total |",
                      "|---|" + "---|" * (len(CLASS_NAMES) + 1)]
            for code, counts in overridden.items():
                lines.append(f"| {code} | " + " | ".join(str(counts.get(n, 0)) for n in CLASS_NAMES)
                             + f" | {sum(counts.values())} |")
        else:
            lines.append("None.")
        lines.append("")
    return "\n".join(lines)


def _comparison(comparison: dict | None) -> list[str]:
    """The candidate and the Evaluator's baseline side by side, on the same images."""
    if not comparison:
        return []
    candidate, baseline = comparison["candidate"], comparison["baseline"]
    at_fpr = f"crystal_recall_at_fpr_below_{tables.FPR_BUDGET}"
    at_recall = f"crystal_fpr_at_recall_{tables.RECALL_TARGET}"

    def point(facts: dict, key: str, field: str) -> str:
        value = facts[key]
        if not value or value.get("recall") is None:
            return "n/a"
        return f"{_pct(value[field])} (threshold {value['threshold']:.3f})"

    rows = [
        ("accuracy", _pct(candidate["accuracy"]), _pct(baseline["accuracy"])),
        ("crystal recall", _pct(candidate["crystal_recall"]),
         _pct(baseline["crystal_recall"])),
        ("crystal precision", _pct(candidate["crystal_precision"]),
         _pct(baseline["crystal_precision"])),
        (f"crystal recall at under {_pct(tables.FPR_BUDGET, 0)} false positives",
         point(candidate, at_fpr, "recall"), point(baseline, at_fpr, "recall")),
        (f"crystal false positives at {_pct(tables.RECALL_TARGET, 0)} recall",
         point(candidate, at_recall, "false_positive_rate"),
         point(baseline, at_recall, "false_positive_rate")),
    ]
    lines = ["## This model against the baseline", "",
             "The Evaluator's baseline (the model served before, or, when none was, the "
             f"model the run started from) on the same {candidate['examples']} eval-split "
             "images. A model is pushed only when its accuracy is not below the "
             "baseline's (beyond the change tolerance).", "",
             "| | this model | baseline |", "|---|---|---|"]
    lines += [f"| {name} | {ours} | {theirs} |" for name, ours, theirs in rows]
    return [*lines, ""]


def _figures(results: EvaluationResults, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t4 = tables.table4(results)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(np.nan_to_num(t4), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(4), tables.PAPER_ORDER)
    ax.set_yticks(range(4), tables.PAPER_ORDER)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true label")
    for i in range(4):
        for j in range(4):
            if not math.isnan(t4[i, j]):
                ax.text(j, i, f"{100 * t4[i, j]:.1f}%", ha="center", va="center",
                        color="white" if t4[i, j] > 0.6 else "black", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("Confusion matrix by true label")
    fig.tight_layout()
    fig.savefig(out_dir / FIGURES["confusion"], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name in CLASS_NAMES:
        roc = results.overall.roc.get(name)
        if roc is None:
            continue
        auc = results.overall.auc.get(name, float("nan"))
        ax.plot(100 * roc.false_positive_rate, 100 * roc.true_positive_rate,
                label=f"{name} (AUC {auc:.3f})")
    crystals = results.overall.roc.get("crystals")
    if crystals is not None:
        for point, marker in ((tables.recall_at_fpr(crystals), "o"),
                              (tables.fpr_at_recall(crystals), "s")):
            if point["recall"] is not None:
                ax.plot(100 * point["false_positive_rate"], 100 * point["recall"], marker,
                        color="black", fillstyle="none")
    ax.set_xlabel("false positives (% of other classes)")
    ax.set_ylabel("recall (% of the class)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 101)
    if ax.get_legend_handles_labels()[0]:  # no curves: an evaluation without ROC data
        ax.legend(loc="lower right")
    ax.set_title("ROC, one class against the rest")
    fig.tight_layout()
    fig.savefig(out_dir / FIGURES["roc"], dpi=120)
    plt.close(fig)

    accuracy = tables.institution_accuracy(results)
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(accuracy) + 2), 3.5))
    codes = list(accuracy)
    ax.bar(codes, [100 * accuracy[c] for c in codes], color="tab:blue")
    if math.isfinite(results.overall.accuracy):
        ax.axhline(100 * results.overall.accuracy, color="black", linestyle="--",
                   label="overall")
        ax.legend(loc="lower right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy per institution")
    fig.tight_layout()
    fig.savefig(out_dir / FIGURES["institutions"], dpi=120)
    plt.close(fig)


def write_report(results: EvaluationResults, out_dir: str | Path,
                 context: dict[str, Any] | None = None) -> dict:
    """Writes report.md, report.json and the figures into ``out_dir``; returns the summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarise(results, context)
    _figures(results, out_dir)
    (out_dir / JSON).write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / MARKDOWN).write_text(markdown(summary, results))
    return summary
