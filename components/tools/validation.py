"""Checks a data folder against the source catalogue before any pipeline runs.

This is what ``marco sources validate`` reports: per institution, counts per native
label and per class, how many records ingestion would use and refuse, and every
refused record with its reason. The verdicts are ingestion's own: records are read by
the same layout readers (:mod:`components.readers`) and judged by the same rules
(:mod:`components.records`: contained paths, mapped labels, one kept copy of each
image id, usable images), on a local disk or an object store alike, so a data folder
that validates cleanly quarantines nothing in ImageExampleGen. On top of that come
what only a look at the whole folder shows: image ids shared between institutions,
labels never seen and an unusual class mix, and the label overrides: each must name
an image the institution's records hold.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from components import filesystem, imagecheck, records
from components.catalogue import Catalogue, Source
from components.names import CLASS_NAMES
from components.readers import list_units, read_unit
from components.records import DUPLICATE_ID, BadRecord, Record

NO_DATA = "missing_source_data"
CLASS_MIX_DISTANCE = 0.35  # total-variation distance from the other institutions' mix
CLASS_MIX_MIN_IMAGES = 50


@dataclass(frozen=True)
class Problem:
    """One offending record; ``origin`` names the manifest line, export line or file."""

    institution: str
    kind: str
    origin: str
    detail: str
    path: str = ""

    def describe(self) -> str:
        where = self.path if self.path and self.path != self.origin else ""
        return f"[{self.institution}] {self.kind}: {self.origin}" + (
            f" ({where})" if where else ""
        ) + (f": {self.detail}" if self.detail else "")


@dataclass
class SourceReport:
    """Counts and findings for one institution.

    ``records`` counts every record read, readable or not; each is either ``usable``
    (ingestion would make it an example) or refused, counted per reason in
    ``quarantined`` and listed in ``problems``.
    """

    code: str
    records: int = 0
    usable: int = 0
    quarantined: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    unmapped: Counter = field(default_factory=Counter)
    unmapped_examples: dict[str, list[str]] = field(default_factory=dict)
    # Other institution -> how many of this one's image ids it already uses.
    collisions: Counter = field(default_factory=Counter)
    collision_examples: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    """The whole data folder's findings, institution by institution."""

    sources: dict[str, SourceReport]
    images_checked: bool

    @property
    def problems(self) -> list[Problem]:
        return [p for report in self.sources.values() for p in report.problems]

    @property
    def warnings(self) -> list[str]:
        return [w for report in self.sources.values() for w in report.warnings]

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem_counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "images_checked": self.images_checked,
            "records": sum(r.records for r in self.sources.values()),
            "usable": sum(r.usable for r in self.sources.values()),
            "quarantined": sum(sum(r.quarantined.values()) for r in self.sources.values()),
            "problem_counts": dict(self.problem_counts()),
            "institutions": {
                code: {
                    "records": r.records,
                    "usable": r.usable,
                    "quarantined": dict(r.quarantined),
                    "native_labels": dict(r.labels),
                    "classes": {CLASS_NAMES[c]: n for c, n in sorted(r.classes.items())},
                    "unmapped_labels": dict(r.unmapped),
                    "image_id_collisions": dict(r.collisions),
                    "problems": len(r.problems),
                    "warnings": r.warnings,
                }
                for code, r in self.sources.items()
            },
        }


# What each worker process judges with, set once per process (see _judge_all).
_RULES: dict = {}


def _set_rules(catalogue: Catalogue, duplicates: dict[str, str], max_pixels: int,
               decode: bool) -> None:
    _RULES.update(catalogue=catalogue, duplicates=duplicates, max_pixels=max_pixels,
                  decode=decode)


def _verdict(item: Record | BadRecord) -> tuple[str, str] | None:
    """(reason, detail) of a refused item, None for a usable one; image bytes stay in
    the worker."""
    verdict = records.judge(item, _RULES["catalogue"], _RULES["duplicates"],
                            _RULES["max_pixels"], decode=_RULES["decode"])
    return (verdict.reason, verdict.detail) if isinstance(verdict, records.Refusal) else None


def _judge_all(
    items: Sequence[Record | BadRecord],
    rules: tuple[Catalogue, dict[str, str], int, bool],
    workers: int,
    progress: bool,
) -> Iterator[tuple[str, str] | None]:
    """:func:`components.records.judge` of every item, in order, over ``workers``
    processes (images are decoded in parallel)."""
    bar = tqdm(total=len(items), desc="checking records", unit="rec", disable=not progress)
    executor = None
    try:
        if workers <= 1:
            _set_rules(*rules)
            results: Iterable = map(_verdict, items)
        else:
            executor = ProcessPoolExecutor(
                max_workers=workers, initializer=_set_rules, initargs=rules
            )
            results = executor.map(_verdict, items, chunksize=64)
        for result in results:
            bar.update(1)
            yield result
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown()


def _class_mix_warnings(reports: dict[str, SourceReport]) -> None:
    for code, report in reports.items():
        total = sum(report.classes.values())
        others: Counter = Counter()
        for other_code, other in reports.items():
            if other_code != code:
                others.update(other.classes)
        other_total = sum(others.values())
        if total < CLASS_MIX_MIN_IMAGES or other_total < CLASS_MIX_MIN_IMAGES:
            continue
        distance = 0.5 * sum(
            abs(report.classes[c] / total - others[c] / other_total)
            for c in range(len(CLASS_NAMES))
        )
        if distance > CLASS_MIX_DISTANCE:
            mine = ", ".join(
                f"{CLASS_NAMES[c]} {report.classes[c] / total:.0%}" for c in range(len(CLASS_NAMES))
            )
            rest = ", ".join(
                f"{CLASS_NAMES[c]} {others[c] / other_total:.0%}" for c in range(len(CLASS_NAMES))
            )
            report.warnings.append(
                f"class mix differs widely from the other institutions (distance "
                f"{distance:.2f} > {CLASS_MIX_DISTANCE}): {mine} against {rest}; check how "
                f"this institution's labels map, 'other' in particular"
            )


def validate_data(
    catalogue: Catalogue,
    data_dir: Path | str,
    *,
    institutions: Iterable[str] | None = None,
    check_images: bool = True,
    workers: int | None = None,
    max_pixels: int = imagecheck.DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> ValidationReport:
    """Read every record of the chosen institutions and judge it as ingestion would.

    Args:
        catalogue: the loaded source catalogue.
        data_dir: the folder the layouts' relative paths start from, local or on an
            object store (``gs://...``).
        institutions: codes to check; all of the catalogue when None.
        check_images: decode every image (slow on large sets) rather than only
            checking that the file exists.
        workers: processes for the image check (default: all cores).
        max_pixels: the decompression-bomb limit.
        progress: show a progress bar.
    """
    data_dir = filesystem.normalise(str(data_dir))
    chosen: list[Source] = (
        [catalogue.get(code) for code in institutions] if institutions else list(catalogue)
    )
    reports: dict[str, SourceReport] = {}
    items: list[Record | BadRecord] = []
    for source in chosen:
        report = reports[source.code] = SourceReport(source.code)
        try:
            units = list_units(source, data_dir)
        except FileNotFoundError as exc:
            report.problems.append(Problem(source.code, NO_DATA, str(source.file), str(exc)))
            continue
        for unit in units:
            for item in read_unit(source, data_dir, unit):
                items.append(item)
                _tally(report, item, source)
        for label in source.labels:
            if report.records and label.native not in report.labels:
                report.warnings.append(
                    f"native label {label.native!r} is mapped in {source.file.name} but no "
                    f"record uses it"
                )
    entries = (records.id_entry(item, catalogue) for item in items)
    duplicates = records.find_duplicates(e for e in entries if e is not None)
    owners = {item.origin: item.institution for item in items if isinstance(item, Record)}
    rules = (catalogue, duplicates, max_pixels, check_images)
    verdicts = _judge_all(items, rules, workers or os.cpu_count() or 1, progress)
    for item, verdict in zip(items, verdicts, strict=True):
        report = reports[item.institution]
        if verdict is None:
            report.usable += 1
            continue
        reason, detail = verdict
        report.quarantined[reason] += 1
        report.problems.append(Problem(item.institution, reason, item.origin, detail, item.path))
        if reason == DUPLICATE_ID:
            owner = owners[duplicates[item.origin]]
            if owner != item.institution:
                report.collisions[owner] += 1
                examples = report.collision_examples.setdefault(owner, [])
                if len(examples) < 3:
                    examples.append(f"{item.image_id!r} ({item.origin})")
    _check_overrides(chosen, items, reports)
    _class_mix_warnings(reports)
    return ValidationReport(sources=reports, images_checked=check_images)


def _check_overrides(
    chosen: Sequence[Source], items: Sequence[Record | BadRecord],
    reports: dict[str, SourceReport],
) -> None:
    """An override naming no image of its institution is a problem; one whose old
    label is not the record's native label any more is a warning."""
    natives: dict[str, dict[str, str]] = {}
    for item in items:
        if isinstance(item, Record):
            natives.setdefault(item.institution, {})[item.image_id] = item.native_label
    for source in chosen:
        if not source.overrides or (source.code not in natives and reports[source.code].problems):
            continue
        known = natives.get(source.code, {})
        for override in records.missing_overrides(_source_only(source), {source.code: known}):
            reports[source.code].problems.append(Problem(
                source.code, records.OVERRIDE_MISSING_IMAGE, override.origin,
                f"overrides image id {override.image_id!r}, which no record of "
                f"{source.code} has", str(source.overrides_file or ""),
            ))
        for image_id, override in source.overrides.items():
            native = known.get(image_id)
            if native is not None and override.old_label and override.old_label != native:
                reports[source.code].warnings.append(
                    f"{override.origin}: image {image_id!r} was reviewed as "
                    f"{override.old_label!r} but its native label is now {native!r}"
                )


def _source_only(source: Source) -> Catalogue:
    """A catalogue of one institution."""
    return Catalogue(sources=(source,))


def _tally(report: SourceReport, item: Record | BadRecord, source: Source) -> None:
    """Count one record read: its native label and class, an unmapped label's examples."""
    report.records += 1
    if not isinstance(item, Record):
        return
    report.labels[item.native_label] += 1
    class_id = source.class_of(item.native_label)
    if class_id is None:
        report.unmapped[item.native_label] += 1
        examples = report.unmapped_examples.setdefault(item.native_label, [])
        if len(examples) < 3:
            examples.append(item.path)
    else:
        report.classes[class_id] += 1


def format_report(report: ValidationReport, max_problems: int = 20) -> str:
    """The human-readable report printed by ``marco sources validate``."""
    lines: list[str] = []
    for code, r in report.sources.items():
        classes = ", ".join(f"{CLASS_NAMES[c]} {r.classes[c]}" for c in range(len(CLASS_NAMES)))
        refused = sum(r.quarantined.values())
        lines.append(f"{code}: {r.records} records ({r.usable} usable, {refused} refused); "
                     f"classes: {classes}")
        for label, count in sorted(r.labels.items(), key=lambda kv: (-kv[1], kv[0])):
            flag = "  UNMAPPED" if label in r.unmapped else ""
            lines.append(f"    {label!r:<36} {count:>8}{flag}")
        for label, count in r.unmapped.most_common():
            examples = ", ".join(r.unmapped_examples.get(label, []))
            lines.append(
                f"  error: native label {label!r} ({count} records) is not mapped in the "
                f"catalogue; e.g. {examples}"
            )
        for owner, count in r.collisions.most_common():
            examples = ", ".join(r.collision_examples.get(owner, []))
            lines.append(
                f"  error: {count} image id(s) already used by institution {owner}; ids must "
                f"be unique across institutions; e.g. {examples}"
            )
        for warning in r.warnings:
            lines.append(f"  warning: {warning}")
    problems = report.problems
    if problems:
        counts = ", ".join(f"{kind} {n}" for kind, n in report.problem_counts().most_common())
        lines.append(f"\n{len(problems)} problem(s): {counts}")
        for problem in problems[:max_problems]:
            lines.append("  " + problem.describe())
        if len(problems) > max_problems:
            lines.append(f"  ... and {len(problems) - max_problems} more")
    else:
        checked = "images decoded" if report.images_checked else "image files present"
        lines.append(f"\nno problems ({checked})")
    return "\n".join(lines)
