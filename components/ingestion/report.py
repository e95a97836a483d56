"""Ingestion counts and the quarantine budget, read back from an Examples artifact.

The Beam stages write ``ingestion_counts.json`` and ``quarantine/quarantine-*.csv``
inside the artifact; this module turns them into the groups recorded as custom
properties and decides whether the quarantined share is acceptable.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from apache_beam.io.filesystems import FileSystems

from components.ingestion.beam_stages import (
    COUNTS_FILE,
    OVERRIDE_TAG,
    QUARANTINE_COLUMNS,
    QUARANTINE_DIR,
    QUARANTINE_PREFIX,
    QUARANTINE_TAG,
    parse_count_key,
)

DEFAULT_QUARANTINE_BUDGET = 0.01
FIRST_PATHS = 5
# Name (after a run stamp) of the quarantine report that outlives a stopped run.
QUARANTINE_REPORT = "quarantine.csv"
BUDGET_HINT = (
    "Fix or remove the refused inputs, or raise the budget: `marco run "
    "--quarantine-budget 0.05` (a fraction, 0-1), or the quarantine_budget setting "
    "of a Kubeflow / Vertex AI settings file."
)


@dataclass
class IngestionSummary:
    """Counts of one ingestion run, grouped as they are recorded on the artifact."""

    per_institution: Counter = field(default_factory=Counter)
    per_label: Counter = field(default_factory=Counter)  # "INSTITUTION/native label"
    per_split: Counter = field(default_factory=Counter)
    per_reason: Counter = field(default_factory=Counter)
    quarantined_per_institution: Counter = field(default_factory=Counter)
    # Examples whose label an expert's override set: "INSTITUTION/class" -> count.
    overrides: Counter = field(default_factory=Counter)

    @property
    def examples(self) -> int:
        return sum(self.per_split.values())

    @property
    def quarantined(self) -> int:
        return sum(self.per_reason.values())

    @property
    def quarantined_fraction(self) -> float:
        total = self.examples + self.quarantined
        return self.quarantined / total if total else 0.0


class QuarantineBudgetExceeded(RuntimeError):
    """Too large a share of the inputs was refused for the run to be trusted.

    Attributes:
        summary: the run's counts.
        budget: the budget that was exceeded (a fraction, 0-1).
        report_path: where the full quarantine report was written, outside the failed
            step's own output (None when no folder was given for it).
    """

    def __init__(self, summary: IngestionSummary, budget: float,
                 rows: list[dict[str, str]], report_path: str | None = None) -> None:
        self.summary = summary
        self.budget = budget
        self.rows = rows
        self.report_path = report_path
        super().__init__(budget_message(summary, budget, rows, report_path))

    def __reduce__(self):
        return type(self), (self.summary, self.budget, self.rows, self.report_path)


def summarise(counts: Mapping[str, int]) -> IngestionSummary:
    """Group the raw counter keys written by the pipeline."""
    summary = IngestionSummary()
    for key, count in counts.items():
        parts = parse_count_key(key)
        if parts[0] == QUARANTINE_TAG:
            _, institution, reason = parts
            summary.per_reason[reason] += count
            summary.quarantined_per_institution[institution or "(unknown)"] += count
        elif parts[0] == OVERRIDE_TAG:
            _, institution, new_class, _split = parts
            summary.overrides[f"{institution}/{new_class}"] += count
        else:
            _, institution, label, split = parts
            summary.per_institution[institution] += count
            summary.per_label[f"{institution}/{label}"] += count
            summary.per_split[split] += count
    return summary


def read_summary(uri: str) -> IngestionSummary:
    """Read the counts an ingestion run wrote into its artifact folder."""
    with FileSystems.open(FileSystems.join(uri, COUNTS_FILE)) as handle:
        return summarise(json.loads(handle.read().decode("utf-8")))


def quarantine_files(uri: str) -> list[str]:
    """The quarantine CSV files of an artifact, sorted."""
    pattern = FileSystems.join(uri, QUARANTINE_DIR, f"{QUARANTINE_PREFIX}-*.csv")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def read_quarantine(uri: str) -> list[dict[str, str]]:
    """Every quarantine row of an artifact, sorted by path then origin."""
    rows: list[dict[str, str]] = []
    for path in quarantine_files(uri):
        with FileSystems.open(path) as handle:
            text = handle.read().decode("utf-8")
        reader = csv.DictReader(io.StringIO(text))
        if tuple(reader.fieldnames or ()) != QUARANTINE_COLUMNS:
            raise ValueError(f"{path}: unexpected header {reader.fieldnames}")
        rows.extend(reader)
    rows.sort(key=lambda r: (r["path"], r["origin"]))
    return rows


def budget_message(summary: IngestionSummary, budget: float, rows: list[dict[str, str]],
                   report_path: str | None = None) -> str:
    """Say how much was refused, why, where the full report is and where to look first."""
    lines = [
        f"{summary.quarantined} of {summary.examples + summary.quarantined} inputs "
        f"({summary.quarantined_fraction:.2%}) were quarantined, above the budget of "
        f"{budget:.2%}. Per reason:"
    ]
    for reason, count in sorted(summary.per_reason.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {reason}: {count}")
        firsts = [r for r in rows if r["reason"] == reason][:FIRST_PATHS]
        for row in firsts:
            lines.append(f"    {row['path'] or row['origin']}: {row['detail']}")
    if report_path:
        lines.append(f"Full quarantine report (every record, its reason, file and line): "
                     f"{report_path}")
    lines.append(BUDGET_HINT)
    return "\n".join(lines)


def per_reason_line(summary: IngestionSummary) -> str:
    """``reason count`` for every reason, most frequent first, on one line."""
    return ", ".join(
        f"{reason} {count}"
        for reason, count in sorted(summary.per_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    )


def write_quarantine_report(rows: list[dict[str, str]], path: str) -> str:
    """Writes every quarantine row to ``path`` (local or any Beam file system) as CSV.

    The columns are those of the artifact's own quarantine files: the image path, the
    institution, the reason, its detail and the origin (the file and line, or the
    folder, the record came from).
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=QUARANTINE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    directory = path.rsplit("/", 1)[0] if "/" in path else ""
    if directory and not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    with FileSystems.create(path) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))
    return path


def check_budget(summary: IngestionSummary, budget: float, uri: str,
                 report_path: str | None = None) -> None:
    """Fail the run when the quarantined share exceeds ``budget`` (a fraction, 0-1).

    When it does and ``report_path`` is given, every quarantine row is first copied
    there: the step's own output folder (``uri``), with its quarantine files, is
    removed by the orchestrator once the step fails.

    Raises:
        QuarantineBudgetExceeded: with counts per reason, the first offending paths and
            where the full report is.
        ValueError: when nothing at all was read, which is never a usable data set.
    """
    if summary.examples + summary.quarantined == 0:
        raise ValueError("ingestion read no images at all; check data_dir and marco_shards")
    if summary.quarantined_fraction > budget:
        rows = read_quarantine(uri)
        if report_path:
            write_quarantine_report(rows, report_path)
        raise QuarantineBudgetExceeded(summary, budget, rows, report_path)
