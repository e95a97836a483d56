"""Planning and writing of a synthetic MARCO-like data set in every institution's layout.

The plan allocates images exactly (largest remainder) to institutions by the paper's
Table 1, to classes by Table 2 and to each institution's native labels of a class in
equal shares, with a few images of every class per institution when the total allows.
Files are then written in the layout each catalogue source declares (CSV manifest,
JSON lines or one folder per label), or as TFRecord shards in the published MARCO
format. Each image's pixels come from a generator seeded by (seed, institution,
index), so the output is byte-identical for a seed whatever the worker count.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import itertools
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from components.catalogue import Catalogue, Source
from components.imagecheck import EXAMPLE_FORMATS
from components.names import (
    CLASS_IDS,
    CLASS_NAMES,
    MARCO_CHANNELS,
    MARCO_COLORSPACE,
    MARCO_ENCODED,
    MARCO_FILENAME,
    MARCO_FORMAT,
    MARCO_HEIGHT,
    MARCO_ID,
    MARCO_LABEL,
    MARCO_RAW,
    MARCO_SOURCE,
    MARCO_TEXT,
    MARCO_WIDTH,
)
from components.tools.synth.render import Look, encode, hints_for, render

# Paper Table 2: images per class after relabelling (training + validation).
PAPER_CLASS_IMAGES: dict[str, int] = {
    "crystals": 63_304,
    "precipitate": 236_433,
    "clear": 165_621,
    "other": 27_856,
}
MIN_PER_CLASS = 3  # images of each class per institution, when the total allows
FORMATS = ("folders", "marco-shards")
SUMMARY_FILE = "synth.json"
SHARD_PATTERN = "marco-{index:05d}-of-{count:05d}.tfrecord"
WELLS_96 = tuple(f"{row}{col:02d}" for row in "ABCDEFGH" for col in range(1, 13))
EXTENSIONS = {f.name: f.extensions for f in EXAMPLE_FORMATS}
PATH_TEMPLATES = (
    "{plate}/{plate}_{well}_{stamp}",
    "{plate}_{well}_{stamp}",
    "{plate}/{well}_{stamp}",
    "{stamp}/{plate}_{well}",
)
EPOCH = dt.datetime(2014, 1, 6, 8, 0, 0)


class SynthError(ValueError):
    """The request cannot be met (bad option, or a layout the writer cannot fill)."""


# --------------------------------------------------------------------------- allocation


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (Hamilton's method).

    Each share gets the floor of its quota; the units left go to the largest
    fractional parts, ties to the earlier entry. Zero weights get nothing unless all
    weights are zero, in which case the split is even.

    Raises:
        SynthError: for a negative total or negative weights.
    """
    if total < 0 or any(w < 0 for w in weights):
        raise SynthError(f"cannot split {total} by weights {list(weights)}")
    if not weights:
        return []
    norm = float(sum(weights))
    if norm <= 0:
        weights, norm = [1.0] * len(weights), float(len(weights))
    quotas = [total * w / norm for w in weights]
    shares = [math.floor(q) for q in quotas]
    left = total - sum(shares)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def apportion(total: int, weights: Sequence[float], minimums: Sequence[int]) -> list[int]:
    """Largest-remainder split where entries whose quota is under their minimum get it.

    Entries are fixed at their minimum, in rounds, while their proportional quota of
    what is left falls below it; the rest is split by :func:`largest_remainder`. When
    the minimums cannot all be met, they are ignored.
    """
    if total < sum(minimums):
        return largest_remainder(total, weights)
    fixed: dict[int, int] = {}
    while True:
        free = [i for i in range(len(weights)) if i not in fixed]
        remaining = total - sum(fixed.values())
        norm = sum(weights[i] for i in free)
        low = [
            i for i in free if (remaining * weights[i] / norm if norm else 0.0) < minimums[i]
        ]
        if not low:
            break
        fixed.update({i: minimums[i] for i in low})
    shares = largest_remainder(remaining, [weights[i] for i in free]) if free else []
    result = [0] * len(weights)
    for i, n in fixed.items():
        result[i] = n
    for i, n in zip(free, shares, strict=True):
        result[i] = n
    return result


def _cell_counts(
    rows: list[int], cols: list[int], allowed: list[list[bool]], floor: int
) -> list[list[int]]:
    """Integer table with the given margins, each allowed cell at least ``floor``.

    Cells follow the product of the margins (independence), rounded so that both
    margins hold exactly: floors first, then the largest fractions, then any unit
    still missing goes to the first allowed cell of its row.
    """
    table = [[floor if ok else 0 for ok in row] for row in allowed]
    rows_left = [r - sum(t) for r, t in zip(rows, table, strict=True)]
    cols_left = [c - sum(t[j] for t in table) for j, c in enumerate(cols)]
    total = sum(rows_left)
    if total <= 0:
        return table
    quota = [
        [rows_left[i] * cols_left[j] / total if allowed[i][j] else 0.0 for j in range(len(cols))]
        for i in range(len(rows))
    ]
    for i, row in enumerate(quota):
        for j, q in enumerate(row):
            n = min(math.floor(q), rows_left[i], cols_left[j])
            table[i][j] += n
            rows_left[i] -= n
            cols_left[j] -= n
    cells = sorted(
        ((i, j) for i in range(len(rows)) for j in range(len(cols)) if allowed[i][j]),
        key=lambda c: (-(quota[c[0]][c[1]] - math.floor(quota[c[0]][c[1]])), c),
    )
    for i, j in cells:
        if rows_left[i] > 0 and cols_left[j] > 0:
            table[i][j] += 1
            rows_left[i] -= 1
            cols_left[j] -= 1
    for i in range(len(rows)):
        while rows_left[i] > 0:
            options = [j for j in range(len(cols)) if allowed[i][j]]
            if not options:
                break
            j = next((j for j in options if cols_left[j] > 0), options[0])
            table[i][j] += 1
            rows_left[i] -= 1
            cols_left[j] -= 1
    return table


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Item:
    """One image to generate, with everything its files and records need."""

    code: str
    index: int
    native: str
    class_name: str
    hints: frozenset[str]
    look: Look
    fmt: str
    plate: str
    well: str
    imaged_at: str
    image_id: str | None
    rel_path: str  # relative to the image root (or, for folder_per_label, the label folder)
    file: str  # relative to the output directory

    @property
    def channels(self) -> int:
        return 3 if self.look.colour else 1


@dataclass
class SourcePlan:
    """The images of one institution and where its label records go."""

    source: Source
    items: list[Item]
    width: int
    height: int
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """The whole data set: the request and every image, institution by institution."""

    seed: int
    images: int
    scale: float
    sources: list[SourcePlan]

    def items(self) -> Iterator[Item]:
        for sp in self.sources:
            yield from sp.items


def _seed_sequence(seed: int, code: str, *more: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(code.encode("utf-8")), *more])


def item_rng(seed: int, item: Item) -> np.random.Generator:
    """The generator of one image's pixels: depends on (seed, institution, index) only."""
    return np.random.default_rng(_seed_sequence(seed, item.code, 1, item.index))


def _concrete(pattern: str, part: int) -> str:
    """A file name matching a glob pattern; ``*`` becomes the part number."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            out.append(f"{part:03d}")
        elif ch == "?":
            out.append("0")
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(ch)
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    choices = [c for c in "xyz0123456789" if c not in body[1:]]
                    out.append(choices[0] if choices else "_")
                else:
                    out.append(body[0])
                i = end
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _extension(source: Source, fmt: str) -> str:
    allowed = source.layout.option("extensions")
    for ext in EXTENSIONS[fmt]:
        if allowed is None or ext in allowed:
            return ext
    raise SynthError(
        f"{source.code}: imaging format {fmt!r} has no extension in layout.extensions {allowed}"
    )


def _formats(source: Source) -> tuple[str, ...]:
    allowed = source.layout.option("extensions")
    fmts = tuple(
        f for f in source.imaging.formats if allowed is None or set(EXTENSIONS[f]) & set(allowed)
    )
    if not fmts:
        raise SynthError(
            f"{source.file}: none of imaging.formats {source.imaging.formats} can be written "
            f"with layout.extensions {allowed}"
        )
    return fmts


def _choose_template(source: Source, samples: list[dict[str, str]]) -> tuple[str, bool, str]:
    """(path template, 1536-well naming, note) whose paths satisfy ``path_pattern``."""
    pattern = source.layout.option("path_pattern")
    under_oil = "oil" in source.setup.lower()
    default = PATH_TEMPLATES[2] if source.layout.reader == "folder_per_label" else PATH_TEMPLATES[0]
    if not pattern:
        return default, under_oil, ""
    regex = re.compile(str(pattern))
    for big in (under_oil, not under_oil):
        for template in (default, *PATH_TEMPLATES):
            ok = True
            for sample in samples:
                values = dict(sample, well=sample["well1536" if big else "well96"])
                match = regex.search(template.format(**values) + ".x")
                if not match:
                    ok = False
                    break
                groups = match.groupdict()
                if any(groups.get(k) not in (None, values[k]) for k in ("plate", "well")):
                    ok = False
                    break
            if ok:
                return template, big, ""
    return (
        default,
        under_oil,
        f"{source.code}: no file naming satisfies path_pattern {pattern!r}; "
        "plate and well are not recoverable from the paths",
    )


def _plan_source(
    source: Source, seed: int, scale: float, counts: dict[str, int]
) -> SourcePlan:
    width = max(16, round(source.imaging.width * scale))
    height = max(16, round(source.imaging.height * scale))
    natives: list[tuple[str, str, str]] = []  # native, class, description
    for class_name in CLASS_NAMES:
        labels = [lab for lab in source.labels if lab.class_name == class_name]
        if not labels:
            continue
        for lab, n in zip(labels, largest_remainder(counts[class_name], [1] * len(labels)),
                          strict=True):
            natives.extend([(lab.native, lab.class_name, lab.description)] * n)
    rng = np.random.default_rng(_seed_sequence(seed, source.code, 0))
    order = rng.permutation(len(natives))
    natives = [natives[i] for i in order]

    under_oil = "oil" in source.setup.lower()
    prefix = re.sub(r"[^A-Z0-9]", "", source.code)[:3] or "PL"
    plate_base = int(rng.integers(10_000, 900_000))
    plate_days = rng.integers(0, 1500, size=max(1, len(natives) // 96 + 1))
    fmts = _formats(source)
    meta = []
    for j in range(len(natives)):
        per_plate = 1536 if under_oil else 96
        p, k = divmod(j, per_plate)
        when = EPOCH + dt.timedelta(days=int(plate_days[min(p, len(plate_days) - 1)]),
                                    seconds=int(k * 40))
        meta.append(
            {
                "plate": f"{prefix}{plate_base + p:06d}",
                "well96": WELLS_96[j % 96],
                "well1536": f"{j % 1536 + 1:04d}",
                "stamp": when.strftime("%Y%m%d-%H%M%S"),
                "imaged_at": when.isoformat(),
            }
        )
    template, big_wells, note = _choose_template(source, meta[:5])
    layout = source.layout
    fields = layout.record_fields
    items = []
    for j, ((native, class_name, description), m) in enumerate(zip(natives, meta, strict=True)):
        if source.imaging.colour == "mixed":
            colour = j % 2 == 0
            fmt = fmts[(j // 2) % len(fmts)]
        else:
            colour = source.imaging.colour == "rgb"
            fmt = fmts[j % len(fmts)]
        well = m["well1536"] if big_wells else m["well96"]
        rel = template.format(plate=m["plate"], well=well, stamp=m["stamp"])
        rel = f"{rel}.{_extension(source, fmt)}"
        items.append(
            Item(
                code=source.code,
                index=j,
                native=native,
                class_name=class_name,
                hints=hints_for(native, description),
                look=Look(width, height, colour, under_oil),
                fmt=fmt,
                plate=m["plate"],
                well=well,
                imaged_at=m["imaged_at"],
                image_id=f"{source.code}-{j + 1:07d}" if "image_id" in fields else None,
                rel_path=rel,
                file="",
            )
        )
    plan = SourcePlan(source=source, items=items, width=width, height=height)
    if note:
        plan.notes.append(note)
    _place_files(plan)
    return plan


def _chunks(n: int, size: int = 5000) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)] or [range(0)]


def _record_files(source: Source, n: int) -> list[tuple[str, str, range]]:
    """(record file, image root, item range) for a csv_manifest or jsonl source."""
    layout = source.layout
    pattern = str(layout.option("manifest") or layout.option("files"))
    parts = _chunks(n) if "*" in pattern else [range(n)]
    out = []
    for k, part in enumerate(parts):
        name = _concrete(pattern, k)
        root = layout.option("image_root")
        root = str(root) if root is not None else str(PurePosixPath(name).parent)
        out.append((name, root, part))
    return out


def _place_files(plan: SourcePlan) -> None:
    """Fill each item's file path (relative to the output directory)."""
    source = plan.source
    if source.layout.reader == "folder_per_label":
        root = PurePosixPath(str(source.layout.option("root")))
        plan.items[:] = [
            dataclasses.replace(it, file=str(root / it.native / it.rel_path)) for it in plan.items
        ]
        return
    for _, image_root, part in _record_files(source, len(plan.items)):
        for j in part:
            it = plan.items[j]
            plan.items[j] = dataclasses.replace(
                it, file=str(PurePosixPath(image_root) / it.rel_path)
            )


def shard_catalogue(catalogue: Catalogue) -> tuple[Catalogue, list[str]]:
    """The part of a catalogue that has published MARCO ids, and what was left out."""
    kept, dropped = [], []
    for source in catalogue:
        if source.marco_source_id is None:
            dropped.append(f"{source.code}: no marco_source_id")
            continue
        labels = tuple(lab for lab in source.labels if lab.marco_raw_id is not None)
        dropped += [f"{source.code}/{lab.native}: no marco_raw_id"
                    for lab in source.labels if lab.marco_raw_id is None]
        if labels:
            kept.append(dataclasses.replace(source, labels=labels))
    return Catalogue(sources=tuple(kept)), dropped


def make_plan(catalogue: Catalogue, images: int, seed: int, scale: float = 1.0) -> Plan:
    """Allocate ``images`` among institutions, classes and native labels.

    Args:
        catalogue: the institutions to generate for (their layout, labels and look).
        images: total number of images, at least 1.
        seed: non-negative seed; the same seed gives the same plan and pixels.
        scale: size factor applied to every imager's width and height.

    Raises:
        SynthError: on a bad option or a catalogue the writer cannot serve.
    """
    if images < 1:
        raise SynthError(f"--images must be at least 1, got {images}")
    if seed < 0:
        raise SynthError(f"--seed must be a non-negative integer, got {seed}")
    if not 0 < scale <= 4:
        raise SynthError(f"--scale must be in (0, 4], got {scale}")
    sources = list(catalogue)
    if not sources:
        raise SynthError("the catalogue has no institutions")
    known = [s.paper_images for s in sources if s.paper_images]
    fallback = float(min(known)) if known else 1.0
    weights = [float(s.paper_images) if s.paper_images else fallback for s in sources]
    allowed = [[any(lab.class_name == c for lab in s.labels) for c in CLASS_NAMES]
               for s in sources]
    cells = sum(sum(row) for row in allowed)
    floor = min(MIN_PER_CLASS, images // cells)
    rows = apportion(images, weights, [floor * sum(row) for row in allowed])
    class_weights = [PAPER_CLASS_IMAGES[c] for c in CLASS_NAMES]
    class_min = [floor * sum(row[j] for row in allowed) for j in range(len(CLASS_NAMES))]
    cols = apportion(images, class_weights, class_min)
    table = _cell_counts(rows, cols, allowed, floor)
    plans = [
        _plan_source(s, seed, scale, dict(zip(CLASS_NAMES, table[i], strict=True)))
        for i, s in enumerate(sources)
    ]
    return Plan(seed=seed, images=images, scale=scale, sources=plans)


# --------------------------------------------------------------------------- writing


def render_item(seed: int, item: Item) -> bytes:
    """Encoded bytes of one planned image."""
    pixels = render(item.class_name, item.hints, item.look, item_rng(seed, item))
    return encode(pixels, item.fmt)


def _work(job: tuple[int, Item, str | None]) -> tuple[Item, bytes | None]:
    seed, item, out_dir = job
    data = render_item(seed, item)
    if out_dir is None:
        return item, data
    path = Path(out_dir) / item.file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return item, None


def _set_dotted(obj: dict, dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        obj = obj.setdefault(key, {})
    obj[last] = value


def _record_values(item: Item) -> dict[str, str | None]:
    return {
        "path": item.rel_path,
        "label": item.native,
        "image_id": item.image_id,
        "plate": item.plate,
        "well": item.well,
        "imaged_at": item.imaged_at,
    }


def write_records(plan: SourcePlan, out: Path) -> list[str]:
    """Write the label records of one institution (manifest or JSON lines files).

    Returns:
        The record files written, relative to ``out``; none for folder_per_label.
    """
    source = plan.source
    layout = source.layout
    if layout.reader == "folder_per_label":
        return []
    fields = layout.record_fields
    order = [f for f in ("path", "label", "image_id", "plate", "well", "imaged_at")
             if f in fields]
    written = []
    for name, _, part in _record_files(source, len(plan.items)):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        items = [plan.items[j] for j in part]
        with path.open("w", encoding="utf-8", newline="") as fh:
            if layout.reader == "csv_manifest":
                writer = csv.writer(fh, delimiter=str(layout.option("delimiter", ",")),
                                    lineterminator="\n")
                writer.writerow([fields[f] for f in order])
                for it in items:
                    values = _record_values(it)
                    writer.writerow([values[f] for f in order])
            else:
                for it in items:
                    values = _record_values(it)
                    obj: dict = {}
                    for f in order:
                        _set_dotted(obj, fields[f], values[f])
                    fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        written.append(name)
    return written


def _example(item: Item, data: bytes, source: Source):
    import tensorflow as tf

    label = next(lab for lab in source.labels if lab.native == item.native)

    def b(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    image_id = item.image_id or f"{item.code}/{PurePosixPath(item.rel_path).with_suffix('')}"
    features = {
        MARCO_ENCODED: b(data),
        MARCO_LABEL: i(CLASS_IDS[item.class_name]),
        MARCO_RAW: i(label.marco_raw_id),
        MARCO_SOURCE: i(source.marco_source_id),
        MARCO_TEXT: b(item.native.encode("utf-8")),
        MARCO_FILENAME: b(PurePosixPath(item.rel_path).name.encode("utf-8")),
        MARCO_ID: b(image_id.encode("utf-8")),
        MARCO_HEIGHT: i(item.look.height),
        MARCO_WIDTH: i(item.look.width),
        MARCO_FORMAT: b(item.fmt.encode("ascii")),
        MARCO_COLORSPACE: b(b"RGB" if item.look.colour else b"Grayscale"),
        MARCO_CHANNELS: i(item.channels),
    }
    return tf.train.Example(features=tf.train.Features(feature=features))


def summary(plan: Plan, fmt: str, extra: dict | None = None) -> dict:
    """The ``synth.json`` content: the request and the counts actually planned."""
    classes = Counter(it.class_name for it in plan.items())
    doc: dict = {
        "generator": "marco synth",
        "seed": plan.seed,
        "images": plan.images,
        "scale": plan.scale,
        "format": fmt,
        "classes": {c: classes.get(c, 0) for c in CLASS_NAMES},
        "institutions": {},
    }
    for sp in plan.sources:
        items = sp.items
        cls = Counter(it.class_name for it in items)
        labels = Counter(it.native for it in items)
        doc["institutions"][sp.source.code] = {
            "images": len(items),
            "layout": sp.source.layout.reader,
            "width": sp.width,
            "height": sp.height,
            "classes": {c: cls.get(c, 0) for c in CLASS_NAMES},
            "labels": {lab.native: labels.get(lab.native, 0) for lab in sp.source.labels},
            "colour": dict(sorted(Counter(
                "rgb" if it.look.colour else "grey" for it in items).items())),
            "formats": dict(sorted(Counter(it.fmt for it in items).items())),
            "notes": sp.notes,
        }
    if extra:
        doc.update(extra)
    return doc


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"--out {out} is not empty; choose a new folder or pass --overwrite")
        if not (out / SUMMARY_FILE).is_file():
            raise SynthError(
                f"--out {out} is not empty and holds no {SUMMARY_FILE}: refusing to clear a "
                "folder that synth did not write"
            )
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _results(
    jobs: list[tuple[int, Item, str | None]], workers: int, progress: bool
) -> Iterator[tuple[Item, bytes | None]]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="img", disable=not progress, desc="synth", leave=False)
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            yield _work(job)
            bar.update()
        bar.close()
        return
    # Forking after TensorFlow has started its threads is unsafe; spawn then.
    method = "spawn" if "tensorflow" in sys.modules else "fork"
    ctx = multiprocessing.get_context(method)
    chunk = max(1, min(16, len(jobs) // (workers * 8)))
    with ctx.Pool(workers) as pool:
        for result in pool.imap(_work, jobs, chunksize=chunk):
            yield result
            bar.update()
    bar.close()


def generate(
    out: Path | str,
    images: int,
    seed: int = 0,
    *,
    catalogue: Catalogue | None = None,
    scale: float = 1.0,
    fmt: str = "folders",
    shards: int = 4,
    workers: int | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> dict:
    """Generate a synthetic data set into ``out`` and return its summary.

    Args:
        out: output folder; created, and must be empty unless ``overwrite``.
        images: total number of images.
        seed: the seed; equal seeds give byte-identical files.
        catalogue: the institutions (default: the project's catalogue).
        scale: size factor for every imager's frame (e.g. 0.25 for tests).
        fmt: ``folders`` (every institution's own layout) or ``marco-shards``
            (TFRecord shards in the published MARCO format).
        shards: number of shards for ``marco-shards``.
        workers: processes rendering images (default: all cores).
        progress: show a progress bar.
        overwrite: clear an earlier synth output in ``out`` first.

    Returns:
        The summary also written to ``out/synth.json``.

    Raises:
        SynthError: on a bad option or an output folder that cannot be used.
    """
    if fmt not in FORMATS:
        raise SynthError(f"--format must be one of {FORMATS}, got {fmt!r}")
    if shards < 1:
        raise SynthError(f"--shards must be at least 1, got {shards}")
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise SynthError(f"--workers must be at least 1, got {workers}")
    if catalogue is None:
        from components.catalogue import load_catalogue

        catalogue = load_catalogue()
    dropped: list[str] = []
    if fmt == "marco-shards":
        catalogue, dropped = shard_catalogue(catalogue)
    plan = make_plan(catalogue, images, seed, scale)
    out = Path(out)
    _prepare_out(out, overwrite)
    extra: dict = {}
    if fmt == "folders":
        jobs = [(seed, it, str(out)) for it in plan.items()]
        for _ in _results(jobs, workers, progress):
            pass
        extra["record_files"] = {
            sp.source.code: write_records(sp, out) for sp in plan.sources
        }
    else:
        jobs = [(seed, it, None) for it in plan.items()]
        count = min(shards, len(jobs))
        names = [SHARD_PATTERN.format(index=k, count=count) for k in range(count)]
        by_code = {sp.source.code: sp.source for sp in plan.sources}
        results = _results(jobs, workers, progress)  # workers start before TensorFlow loads
        first = next(results)
        import tensorflow as tf

        writers = [tf.io.TFRecordWriter(str(out / name)) for name in names]
        try:
            for k, (item, data) in enumerate(itertools.chain([first], results)):
                example = _example(item, data, by_code[item.code])
                writers[k % count].write(example.SerializeToString())
        finally:
            for w in writers:
                w.close()
        extra["shards"] = names
        if dropped:
            extra["left_out"] = dropped
    doc = summary(plan, fmt, extra)
    (out / SUMMARY_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc
