"""Result rows of ``marco score``: their sort, the lab's CSV file and the hits folder.

Workers write rows unsorted, as JSON lines, in shards. The driver then sorts them with
an external merge sort: chunks of at most ``chunk_rows`` rows are sorted in memory and
written to scratch files, which are merged as streams. The driver's memory is bounded
by the chunk size whatever the number of images, and a run of up to one chunk (100,000
images by default) is sorted in memory with no scratch files at all. A sort inside
Beam would gather every row on one worker (or the DirectRunner's memory) for a single
final order; the merge keeps that bound and costs a few seconds per million rows.

Order: scored images by crystal probability, highest first (ties by path); then the
images that could not be scored, by path, each with its error.

The ``imaged_at`` column, when the image was taken, is read from each path while the
file is written (:class:`ImagedAtParser`), so rows carry only what the model gave.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import heapq
import itertools
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np

from components import filesystem
from components.names import CLASS_IDS, CLASS_NAMES, NUM_CLASSES

COLUMNS = ("path", "predicted_class", *CLASS_NAMES, "plate", "well", "imaged_at", "error")
CRYSTALS = CLASS_IDS["crystals"]
DEFAULT_CHUNK_ROWS = 100_000
DEFAULT_HITS_THRESHOLD = 0.7

# The last date in the path, 8 digits (20140114) or with dashes (2014-01-14), not part
# of a longer number, optionally followed (after "T", "_", "-" or nothing) by a time
# HHMM or HHMMSS, with or without colons. Matches "GSK781830_A01_20140114-080000.jpg",
# "2014-01-14/PLATE7_B12.jpg" and "PLATE7/2014-01-14T08:30/B12.png".
DEFAULT_IMAGED_AT_PATTERN = (
    r"^.*(?<![0-9])(?P<year>(?:19|20)[0-9]{2})(?P<sep>-?)(?P<month>0[1-9]|1[0-2])(?P=sep)"
    r"(?P<day>0[1-9]|[12][0-9]|3[01])"
    r"(?:[T_-]?(?P<hour>[01][0-9]|2[0-3]):?(?P<minute>[0-5][0-9])(?::?(?P<second>[0-5][0-9]))?)?"
    r"(?![0-9])"
)
_DATE_GROUPS = ("year", "month", "day")
_ISO_TIME = re.compile(
    r"^(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[T ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2}))?)?$"
)


def _iso(fields: dict[str, str | None], source: str) -> str:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS`` from year...second strings, checked."""
    try:
        day = datetime.date(int(fields["year"]), int(fields["month"]), int(fields["day"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: not a date ({exc})") from None
    if not fields.get("hour"):
        return day.isoformat()
    moment = datetime.datetime(day.year, day.month, day.day, int(fields["hour"]),
                               int(fields.get("minute") or 0), int(fields.get("second") or 0))
    return moment.isoformat()


def normalise_imaged_at(text: str, source: str = "imaged_at") -> str:
    """An imaging time as ISO 8601 (``2014-01-14`` or ``2014-01-14T08:00:00``).

    Accepts those forms, a space for the ``T`` and times without seconds; an empty
    text stays empty.

    Raises:
        ValueError: naming ``source`` for anything else.
    """
    text = text.strip()
    if not text:
        return ""
    match = _ISO_TIME.match(text)
    if match is None:
        raise ValueError(f"{source}: {text!r} is not a date or time as YYYY-MM-DD or "
                         "YYYY-MM-DDTHH:MM[:SS]")
    return _iso(match.groupdict(), f"{source}: {text!r}")


class ImagedAtParser:
    """Reads when an image was taken from its path with a regular expression.

    The pattern is searched (``re.search``) in the path written with ``/`` separators.
    Its named groups give the time: either ``imaged_at`` (text in ISO form, see
    :func:`normalise_imaged_at`), or ``year``, ``month`` and ``day`` with optional
    ``hour``, ``minute`` and ``second``. Paths it does not match, or whose digits are
    no real date (a 31 February), get an empty value. An empty pattern reads nothing.

    Raises:
        ValueError: for a pattern that does not compile or lacks those groups.
    """

    def __init__(self, pattern: str | None = DEFAULT_IMAGED_AT_PATTERN) -> None:
        self.pattern = pattern or ""
        self._regex = None
        if not self.pattern:
            return
        try:
            self._regex = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"imaging-time pattern {pattern!r} is not a valid regular "
                             f"expression: {exc}") from None
        groups = set(self._regex.groupindex)
        if "imaged_at" not in groups and not set(_DATE_GROUPS) <= groups:
            raise ValueError(f"imaging-time pattern {pattern!r} has neither an "
                             "(?P<imaged_at>...) group nor (?P<year>...), (?P<month>...) "
                             "and (?P<day>...) groups")

    def parse(self, path: str) -> str:
        if self._regex is None:
            return ""
        match = self._regex.search(path.replace(os.sep, "/"))
        if match is None:
            return ""
        found = match.groupdict()
        try:
            if found.get("imaged_at") is not None:
                return normalise_imaged_at(found["imaged_at"], path)
            return _iso(found, path)
        except ValueError:
            return ""


@dataclasses.dataclass(frozen=True)
class ResultRow:
    """One image's result: its four probabilities, or the error that stopped it."""

    path: str
    probabilities: tuple[float, ...] | None
    plate: str = ""
    well: str = ""
    error: str = ""

    def __post_init__(self) -> None:
        if (self.probabilities is None) == (not self.error):
            raise ValueError(f"{self.path}: a row has either probabilities or an error")
        if self.probabilities is not None and len(self.probabilities) != NUM_CLASSES:
            raise ValueError(f"{self.path}: {len(self.probabilities)} probabilities, "
                             f"expected {NUM_CLASSES}")

    @property
    def predicted_class(self) -> str:
        if self.probabilities is None:
            return ""
        return CLASS_NAMES[int(np.argmax(self.probabilities))]

    @property
    def crystals(self) -> float | None:
        return None if self.probabilities is None else self.probabilities[CRYSTALS]

    def sort_key(self) -> tuple[int, float, str]:
        if self.probabilities is None:
            return (1, 0.0, self.path)
        return (0, -self.probabilities[CRYSTALS], self.path)

    def to_json(self) -> str:
        return json.dumps(
            [self.path, self.probabilities, self.plate, self.well, self.error],
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, line: str) -> ResultRow:
        path, probabilities, plate, well, error = json.loads(line)
        return cls(path, None if probabilities is None else tuple(probabilities),
                   plate, well, error)

    def csv_cells(self, imaged_at: str = "") -> list[str]:
        """The row's CSV cells in :data:`COLUMNS` order, with its imaging time."""
        if self.probabilities is None:
            values = [""] * NUM_CLASSES
        else:
            values = [format_probability(p) for p in self.probabilities]
        return [self.path, self.predicted_class, *values, self.plate, self.well, imaged_at,
                self.error]


def format_probability(value: float) -> str:
    """The shortest decimal that reads back as the model's float32 value exactly."""
    return np.format_float_positional(np.float32(value), unique=True, trim="-")


def read_rows(files: Iterable[str]) -> Iterator[ResultRow]:
    """Rows from JSON-lines files (local or remote), file by file."""
    for path in files:
        with filesystem.open_text(path) as handle:
            for line in handle:
                if line.strip():
                    yield ResultRow.from_json(line)


def _write_run(rows: list[ResultRow], path: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(row.to_json() + "\n")
    return path


def _read_run(path: str) -> Iterator[ResultRow]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield ResultRow.from_json(line)


@contextlib.contextmanager
def sorted_rows(
    rows: Iterable[ResultRow], scratch_dir: str, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[tuple[int, Iterator[ResultRow]]]:
    """External merge sort of ``rows`` into result order.

    Yields ``(number of rows, iterator over them in order)``; the count is known before
    the first row is read, which lets the caller size the hit files' rank prefix.

    Args:
        rows: the rows, in any order.
        scratch_dir: an existing local folder for the sorted chunks.
        chunk_rows: most rows held in memory at once.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    runs: list[str] = []
    count = 0
    iterator = iter(rows)
    while True:
        chunk = list(itertools.islice(iterator, chunk_rows))
        count += len(chunk)
        chunk.sort(key=ResultRow.sort_key)
        if not runs and len(chunk) < chunk_rows:
            yield count, iter(chunk)  # everything fitted in one chunk
            return
        if chunk:
            runs.append(_write_run(chunk, os.path.join(scratch_dir, f"run-{len(runs):05d}")))
        if len(chunk) < chunk_rows:
            break
    del chunk
    with contextlib.ExitStack() as stack:
        streams = []
        for run in runs:
            generator = _read_run(run)
            stack.callback(generator.close)
            streams.append(generator)
        yield count, heapq.merge(*streams, key=ResultRow.sort_key)


@dataclasses.dataclass
class ResultsSummary:
    """What a scoring run found; ``hit_failures`` names hits that could not be copied."""

    images: int = 0
    scored: int = 0
    errors: int = 0
    by_class: Counter = dataclasses.field(default_factory=Counter)
    hits: int = 0
    hits_copied: int = 0
    hit_failures: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["by_class"] = {name: self.by_class.get(name, 0) for name in CLASS_NAMES}
        return data


def hit_file_name(rank: int, width: int, row: ResultRow) -> str:
    """``<rank>_<crystal probability>_<file name>``: a name listing sorts by rank."""
    return f"{rank:0{width}d}_{row.crystals:.3f}_{filesystem.name(row.path)}"


def _copy(source: str, target: str) -> None:
    if filesystem.is_remote(source):
        with open(target, "wb") as handle:
            handle.write(filesystem.read_bytes(source))
    else:
        shutil.copy2(source, target)


def write_results(
    rows: Iterator[ResultRow],
    count: int,
    out: str,
    *,
    hits_dir: str | None = None,
    hits_threshold: float = DEFAULT_HITS_THRESHOLD,
    imaged_at_pattern: str | None = DEFAULT_IMAGED_AT_PATTERN,
) -> ResultsSummary:
    """Writes the sorted ``rows`` to the CSV file ``out`` and copies the hits.

    Each row's ``imaged_at`` cell is read from its path with ``imaged_at_pattern``
    (:class:`ImagedAtParser`; None or empty leaves the column empty).

    The file appears complete or not at all (written beside ``out``, then renamed).
    Hits are the images whose crystal probability is above ``hits_threshold``; each
    is copied to ``hits_dir`` as :func:`hit_file_name` names it, so the folder lists
    them in the order of the CSV file. A hit that cannot be copied is reported in the
    summary, not raised.
    """
    summary = ResultsSummary()
    imaged_at = ImagedAtParser(imaged_at_pattern)
    width = max(4, len(str(count)))
    if hits_dir is not None:
        os.makedirs(hits_dir, exist_ok=True)
    partial = f"{out}.partial"
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(row.csv_cells(imaged_at.parse(row.path)))
            summary.images += 1
            if row.probabilities is None:
                summary.errors += 1
                continue
            summary.scored += 1
            summary.by_class[row.predicted_class] += 1
            if row.crystals > hits_threshold:
                summary.hits += 1
                if hits_dir is not None:
                    target = os.path.join(hits_dir, hit_file_name(summary.hits, width, row))
                    try:
                        _copy(row.path, target)
                        summary.hits_copied += 1
                    except OSError as exc:
                        summary.hit_failures.append(f"{row.path}: {exc}")
    os.replace(partial, out)
    return summary


def apply_imaged_at_pattern(csv_path: str, pattern: str | None) -> int:
    """Re-reads the ``imaged_at`` column of a results file from its paths with ``pattern``.

    For a file :func:`write_results` wrote with another pattern; the file is rewritten
    beside itself and renamed, so it stays whole. Returns the number of rows that got a
    time.

    Raises:
        ValueError: for a bad pattern, or a file without the ``path`` and ``imaged_at``
            columns.
    """
    parser = ImagedAtParser(pattern)
    found = 0
    partial = f"{csv_path}.partial"
    with open(csv_path, newline="", encoding="utf-8") as source, \
            open(partial, "w", newline="", encoding="utf-8") as target:
        reader = csv.reader(source)
        header = next(reader, [])
        if "path" not in header or "imaged_at" not in header:
            raise ValueError(f"{csv_path}: not a results file with 'path' and 'imaged_at' "
                             f"columns (columns: {', '.join(header) or 'none'})")
        path_at, time_at = header.index("path"), header.index("imaged_at")
        writer = csv.writer(target, lineterminator="\n")
        writer.writerow(header)
        for cells in reader:
            if len(cells) > max(path_at, time_at):
                cells[time_at] = parser.parse(cells[path_at])
                found += bool(cells[time_at])
            writer.writerow(cells)
    os.replace(partial, csv_path)
    return found
