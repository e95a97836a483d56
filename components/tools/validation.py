"""Checks a data folder against the source catalogue before any pipeline runs.

This is what ``marco sources validate`` reports: per institution, counts per native
label and per class, and every problem that would cost images or corrupt labels
downstream (unmapped labels, missing or unreadable files, image ids used twice, within
one institution or across two), plus warnings that need a person's judgement (labels
never seen, an unusual class mix).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from components import imagecheck
from components.catalogue import Catalogue, Source
from components.names import CLASS_NAMES
from components.readers import BadRecord, Record, list_units, read_unit

UNMAPPED_LABEL = "unmapped_label"
DUPLICATE_ID = "duplicate_image_id"
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
    """Counts and findings for one institution."""

    code: str
    records: int = 0
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
            "problem_counts": dict(self.problem_counts()),
            "institutions": {
                code: {
                    "records": r.records,
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


def _check_path(args: tuple[str, int]) -> tuple[str, str, str] | None:
    path, max_pixels = args
    try:
        imagecheck.read_and_inspect(path, max_pixels)
    except imagecheck.BadImage as exc:
        return path, exc.reason, exc.detail
    return None


def _check_images(
    paths: list[tuple[str, str, str]], workers: int, max_pixels: int, progress: bool
) -> Iterator[tuple[str, str, str, str]]:
    """Yield (institution, path, reason, detail) for each unusable image, in parallel."""
    owners = {path: code for code, path, _ in paths}
    jobs = [(path, max_pixels) for _, path, _ in paths]
    bar = tqdm(total=len(jobs), desc="checking images", unit="img", disable=not progress)
    try:
        if workers <= 1:
            results: Iterable = map(_check_path, jobs)
            executor = None
        else:
            executor = ProcessPoolExecutor(max_workers=workers)
            results = executor.map(_check_path, jobs, chunksize=64)
        for result in results:
            bar.update(1)
            if result is not None:
                path, reason, detail = result
                yield owners[path], path, reason, detail
    finally:
        bar.close()
        if workers > 1:
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
    """Read every record of the chosen institutions and check it against the catalogue.

    Args:
        catalogue: the loaded source catalogue.
        data_dir: the folder the layouts' relative paths start from.
        institutions: codes to check; all of the catalogue when None.
        check_images: decode every image (slow on large sets) rather than only
            checking that the file exists.
        workers: processes for the image check (default: all cores).
        max_pixels: the decompression-bomb limit.
        progress: show a progress bar.
    """
    data_dir = Path(data_dir)
    chosen: list[Source] = (
        [catalogue.get(code) for code in institutions] if institutions else list(catalogue)
    )
    reports: dict[str, SourceReport] = {}
    owners_of_id: dict[str, tuple[str, str]] = {}
    to_check: list[tuple[str, str, str]] = []
    for source in chosen:
        report = reports[source.code] = SourceReport(source.code)
        try:
            units = list_units(source, data_dir)
        except FileNotFoundError as exc:
            report.problems.append(Problem(source.code, NO_DATA, str(source.file), str(exc)))
            continue
        label_map = source.label_map
        for unit in units:
            for item in read_unit(source, data_dir, unit):
                if isinstance(item, BadRecord):
                    report.problems.append(
                        Problem(source.code, item.reason, item.origin, item.detail, item.path)
                    )
                    continue
                _tally(report, item, label_map, owners_of_id, to_check)
        for label in source.labels:
            if report.records and label.native not in report.labels:
                report.warnings.append(
                    f"native label {label.native!r} is mapped in {source.file.name} but no "
                    f"record uses it"
                )
    if to_check:
        if check_images:
            checked = _check_images(
                to_check, workers or os.cpu_count() or 1, max_pixels, progress
            )
            origins = {path: origin for _, path, origin in to_check}
            for code, path, reason, detail in checked:
                reports[code].problems.append(Problem(code, reason, origins[path], detail, path))
        else:
            for code, path, origin in to_check:
                if not os.path.isfile(path):
                    reports[code].problems.append(
                        Problem(code, imagecheck.MISSING, origin, "file does not exist", path)
                    )
    _class_mix_warnings(reports)
    return ValidationReport(sources=reports, images_checked=check_images)


def _tally(
    report: SourceReport,
    record: Record,
    label_map: dict[str, int],
    owners_of_id: dict[str, tuple[str, str]],
    to_check: list[tuple[str, str, str]],
) -> None:
    report.records += 1
    report.labels[record.native_label] += 1
    class_id = label_map.get(record.native_label)
    if class_id is None:
        report.unmapped[record.native_label] += 1
        examples = report.unmapped_examples.setdefault(record.native_label, [])
        if len(examples) < 3:
            examples.append(record.path)
        report.problems.append(
            Problem(
                record.institution,
                UNMAPPED_LABEL,
                record.origin,
                f"native label {record.native_label!r} is not in the catalogue",
                record.path,
            )
        )
    else:
        report.classes[class_id] += 1
    previous = owners_of_id.get(record.image_id)
    if previous is not None:
        owner, origin = previous
        where = "" if owner == record.institution else f" of institution {owner}"
        if owner != record.institution:
            report.collisions[owner] += 1
            examples = report.collision_examples.setdefault(owner, [])
            if len(examples) < 3:
                examples.append(f"{record.image_id!r} ({record.origin})")
        report.problems.append(
            Problem(
                record.institution,
                DUPLICATE_ID,
                record.origin,
                f"image id {record.image_id!r} already used by {origin}{where}",
                record.path,
            )
        )
        return
    owners_of_id[record.image_id] = (record.institution, record.origin)
    to_check.append((record.institution, record.path, record.origin))


def format_report(report: ValidationReport, max_problems: int = 20) -> str:
    """The human-readable report printed by ``marco sources validate``."""
    lines: list[str] = []
    for code, r in report.sources.items():
        classes = ", ".join(f"{CLASS_NAMES[c]} {r.classes[c]}" for c in range(len(CLASS_NAMES)))
        lines.append(f"{code}: {r.records} records; classes: {classes}")
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
