"""Which column, JSON key or XML path plays which record role, and which class a
native label's words suggest (``marco sources add``).

Roles (image path, label, image id, plate, well, imaging time) are recognised from
the values (image file names, dates, wells, a small vocabulary) and from the names
(``Plate Barcode`` is a plate, ``Image/@path`` a path); plate, well and time that no
column holds are looked for in the image file names (:func:`detect_path_pattern`).
Class suggestions come from the label's words and from other institutions' catalogue
files, and are only ever written as comments.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.catalogue import RECORD_FIELDS
from components.imagecheck import EXAMPLE_FORMATS, KNOWN_FORMATS, extensions, format_names
from components.names import CLASS_IDS
from components.tools.drafting.detection import DraftError

IMAGE_EXTENSIONS = extensions(EXAMPLE_FORMATS)  # what ingestion can read
# Images it cannot: noted, and never chosen as a layout's extensions.
OTHER_IMAGE_EXTENSIONS = tuple(e for e in extensions(KNOWN_FORMATS) if e not in IMAGE_EXTENSIONS)
INGESTED_FORMATS = format_names(EXAMPLE_FORMATS)
INGESTED_NAMES = ", ".join(f.pil_name for f in EXAMPLE_FORMATS)
IMAGE_NAMES = ", ".join(f".{e}" for e in IMAGE_EXTENSIONS)


MAX_LABEL_VALUES = 200  # more distinct values than this is not a label vocabulary
ROLE_SHARE = 0.9  # share of values that must look like a role's values
# Words in a column name, JSON key or XML path that suggest its role.
ROLE_HINTS: dict[str, frozenset[str]] = {
    "path": frozenset({"file", "filename", "image", "img", "path", "filepath", "location",
                       "picture", "photo", "url", "uri", "imagefile", "imagepath"}),
    "label": frozenset({"label", "class", "score", "result", "outcome", "observation",
                        "category", "call", "annotation", "verdict", "rating", "tag",
                        "classification", "obs", "grade", "scoring"}),
    "image_id": frozenset({"id", "uid", "uuid", "guid", "identifier", "key", "imageid"}),
    "plate": frozenset({"plate", "barcode", "tray", "platebarcode", "plateid"}),
    "well": frozenset({"well", "drop", "position", "pos", "subwell", "wellposition"}),
    "imaged_at": frozenset({"date", "time", "imaged", "timestamp", "taken", "datetime",
                            "acquired", "captured", "when", "inspection", "inspected"}),
}

_DATE = re.compile(
    r"^(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})"
    r"(?:[ T_-]?\d{2}:?\d{2}(?::?\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$"
)
_DMY = re.compile(r"^\d{1,2}[/.]\d{1,2}[/.]\d{2,4}(?: \d{1,2}:\d{2}(?::\d{2})?)?$")
_WELL = re.compile(r"^[A-Pa-p]\s*0?(?P<n>\d{1,2})(?:[._-]\d)?$")
_NUMERIC = re.compile(r"^-?\d+(?:\.\d+)?$")
_TOKEN = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Words that suggest a class; a label containing words of several classes gets the
# first class of CLASS_PRECEDENCE (crystals win, as in CSIRO's 'crystals + precipitate'
# and HWMRI's 'precipitate_and_crystal'; precipitate beats other, as in CSIRO's
# 'phase separation + precipitate').
CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "crystals": ("xtal", "crystal", "cryst", "needle", "spherul", "urchin", "prism", "rods",
                 "xl", "xls", "xtl"),
    "precipitate": ("ppt", "precip", "prec", "amorph", "granul", "aggreg", "skin"),
    "other": ("phase", "separat", "oil", "bad", "fail", "dry", "unclass", "unknown", "dust",
              "fibre", "fiber", "bubble", "other", "junk", "artefact", "artifact", "error",
              "ps", "lps", "misc"),
    "clear": ("clear", "empty", "clean", "transparent", "blank", "none", "nothing"),
}
CLASS_PRECEDENCE = ("crystals", "precipitate", "other", "clear")
OTHER_PHRASES = ("no drop", "nodrop", "missing drop", "no image")
NEGATIONS = frozenset({"no", "not", "non", "without"})
SUBSTRING_MIN = 4  # shorter class words must match a whole word


@dataclass(frozen=True)
class Suggestion:
    """A class a label's words point to, and why; shown as a comment, never filled in."""

    class_name: str | None
    reason: str


# --------------------------------------------------------------------------- values


def _tokens(name: str) -> list[str]:
    return _TOKEN.findall(_CAMEL.sub(" ", name).lower())


def role_hints(name: str) -> set[str]:
    """Roles a column name, dotted JSON key or XML path suggests (``"Plate Barcode"``
    -> plate).

    The last part of a dotted key or path speaks first (``plate.well`` and
    ``Drop/@well`` are wells); when it says nothing, the earlier parts are asked
    (``score.text`` is a label).
    """
    parts = [part for part in re.split(r"[./]", name) if part] or [name]
    for tokens in (_tokens(parts[-1]), _tokens(name)):
        whole = "".join(tokens)
        found = {
            role for role, words in ROLE_HINTS.items()
            if whole in words or any(t in words for t in tokens)
        }
        if found:
            return found
    return set()


def looks_like_date(value: str) -> bool:
    match = _DATE.match(value)
    if match:
        y, m, d = (int(match[k]) for k in ("y", "m", "d"))
        return 1900 <= y <= 2100 and 1 <= m <= 12 and 1 <= d <= 31
    return bool(_DMY.match(value))


def looks_like_well(value: str) -> bool:
    match = _WELL.match(value)
    return bool(match) and 1 <= int(match["n"]) <= 48


def file_extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def is_image_name(value: str) -> bool:
    return file_extension(value.strip()) in IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS


def _share(values: Sequence[str], test) -> float:
    return sum(1 for v in values if test(v)) / len(values) if values else 0.0


@dataclass
class _Column:
    """Sampled values of one manifest column or JSON key, and what they look like."""

    name: str
    values: list[str]
    rows: int

    @property
    def filled(self) -> list[str]:
        return [v for v in self.values if v]

    @property
    def fill(self) -> float:
        return len(self.filled) / self.rows if self.rows else 0.0

    @property
    def distinct(self) -> int:
        return len(set(self.filled))

    @property
    def unique(self) -> bool:
        return len(self.filled) > 1 and self.distinct == len(self.filled)

    def share(self, test) -> float:
        return _share(self.filled, test)


def profile_columns(names: Sequence[str], rows: Sequence[Mapping[str, str]]) -> list[_Column]:
    return [
        _Column(name, [(row.get(name) or "").strip() for row in rows], len(rows))
        for name in names
    ]


# --------------------------------------------------------------------------- roles


def _pick(
    columns: Sequence[_Column], role: str, forced: str | None, kind: str
) -> _Column | None:
    if forced is None:
        return None
    for column in columns:
        if column.name == forced:
            return column
    have = ", ".join(repr(c.name) for c in columns)
    raise DraftError(f"--{role}-column {forced!r} is not a {kind} of the records (have {have})")


def assign_roles(
    columns: Sequence[_Column],
    *,
    label_column: str | None = None,
    path_column: str | None = None,
    kind: str = "column",
) -> tuple[dict[str, str], list[str], list[str]]:
    """Decide which column plays which record role.

    Returns:
        (role -> column name, columns left unused, notes on doubtful choices).

    Raises:
        DraftError: when no column holds image file names or none looks like a label,
            saying what was found instead.
    """
    roles: dict[str, _Column] = {}
    notes: list[str] = []
    forced_path = _pick(columns, "path", path_column, kind)
    forced_label = _pick(columns, "label", label_column, kind)
    if forced_path:
        roles["path"] = forced_path
    if forced_label:
        roles["label"] = forced_label

    def free() -> list[_Column]:
        used = {id(c) for c in roles.values()}
        return [c for c in columns if id(c) not in used and c.filled]

    def best(candidates: list[_Column], role: str, score) -> _Column | None:
        if not candidates:
            return None
        return max(candidates, key=lambda c: (role in role_hints(c.name), score(c)))

    if "path" not in roles:
        image_like = [c for c in free() if c.share(is_image_name) >= 0.8]
        chosen = best(image_like, "path", lambda c: c.share(is_image_name))
        if chosen is None:
            raise DraftError(
                f"no {kind} holds image file names ({IMAGE_NAMES}); "
                f"{kind}s: {', '.join(repr(c.name) for c in columns)}"
            )
        roles["path"] = chosen
    def named_label(c: _Column, role: str) -> bool:
        """A column named like a label keeps its values for the label, whatever they are."""
        hints = role_hints(c.name)
        return "label" in hints and role not in hints

    dated = [
        c for c in free()
        if c.share(looks_like_date) >= ROLE_SHARE and not named_label(c, "imaged_at")
    ]
    if chosen := best(dated, "imaged_at", lambda c: c.share(looks_like_date)):
        roles["imaged_at"] = chosen
    wells = [
        c for c in free()
        if not named_label(c, "well") and (
            c.share(looks_like_well) >= ROLE_SHARE
            or ("well" in role_hints(c.name) and c.share(str.isdigit) >= ROLE_SHARE)
        )
    ]
    if chosen := best(wells, "well", lambda c: c.share(looks_like_well)):
        roles["well"] = chosen
    for column in free():
        if "image_id" in role_hints(column.name) and "plate" not in role_hints(column.name):
            if column.unique and column.fill >= 0.999:
                roles["image_id"] = column
                break
            notes.append(
                f"{kind} {column.name!r} looks like an id but is not unique or not always "
                "filled; image ids are derived from the image paths instead"
            )
    if "label" not in roles:
        candidates = [
            c for c in free()
            if c.fill >= ROLE_SHARE
            and c.distinct <= MAX_LABEL_VALUES
            and not (c.unique and len(c.filled) >= 20)
            and c.share(looks_like_date) < 0.5
        ]

        def label_score(c: _Column) -> float:
            hints = role_hints(c.name)
            return (
                2.0 * ("label" in hints)
                - 2.0 * bool(hints - {"label"})
                + (1.0 - c.distinct / max(1, len(c.filled)))
            )

        ranked = sorted(candidates, key=label_score, reverse=True)
        if not ranked:
            raise DraftError(
                f"no {kind} looks like a label (a few distinct values, filled on every "
                f"record); {kind}s: {', '.join(repr(c.name) for c in columns)}; "
                f"name the label {kind} with --label-column"
            )
        roles["label"] = ranked[0]
        others = [c for c in ranked[1:] if label_score(c) > 0]
        if others:
            notes.append(
                "other possible label " + kind + "s: "
                + ", ".join(f"{c.name!r} ({c.distinct} distinct values)" for c in others)
                + "; choose one with --label-column"
            )
    plates = [c for c in free() if "plate" in role_hints(c.name)]
    if plates:
        roles["plate"] = plates[0]
    mapping = {role: roles[role].name for role in RECORD_FIELDS if role in roles}
    ignored = [c.name for c in columns if c.name not in mapping.values()]
    return mapping, ignored, notes


# --------------------------------------------------------------------------- path patterns


def _split_path(relative: str) -> list[list[str]]:
    stem = relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative
    return [segment.split("_") for segment in stem.split("/")]


def detect_path_pattern(paths: Sequence[str], wanted: Iterable[str]) -> str | None:
    """A ``path_pattern`` reading the ``wanted`` groups (plate, well, imaged_at) from paths.

    Paths are cut at ``/`` and ``_``; when most paths have the same shape, a position
    whose values are all wells, dates or repeated plate-like codes becomes a named
    group. The pattern is kept only when it reads the same values back from the paths.
    """
    wanted = set(wanted)
    if not paths or not wanted:
        return None
    split = [_split_path(p.replace(os.sep, "/")) for p in paths]
    shapes = Counter(tuple(len(s) for s in parts) for parts in split)
    shape, count = shapes.most_common(1)[0]
    if count < 0.95 * len(split):
        return None
    same = [parts for parts in split if tuple(len(s) for s in parts) == shape]
    positions = [(i, j) for i, n in enumerate(shape) for j in range(n)]
    values = {pos: [parts[pos[0]][pos[1]] for parts in same] for pos in positions}
    named: dict[tuple[int, int], str] = {}
    classes: dict[str, str] = {}
    if "well" in wanted:
        # Plate codes such as 'P1' look like wells too: wells vary the most, and come last.
        lettered = [p for p in positions if _share(values[p], looks_like_well) == 1.0]
        numbered = [
            p for p in positions
            if all(len(v) == 4 and v.isdigit() and 1 <= int(v) <= 1536 for v in values[p])
        ]
        for candidates, regex in ((lettered, r"[A-Pa-p]\d{1,2}"), (numbered, r"\d{4}")):
            if candidates:
                pos = max(candidates, key=lambda p: (len(set(values[p])), p))
                named[pos], classes["well"] = "well", regex
                break
    if "imaged_at" in wanted:
        for pos in positions:
            if pos not in named and _share(values[pos], looks_like_date) == 1.0:
                named[pos], classes["imaged_at"] = "imaged_at", r"[^/_]+"
                break
    if "plate" in wanted:
        well_pos = next((p for p, n in named.items() if n == "well"), None)
        for pos in sorted(positions, key=lambda p: (well_pos is not None and p > well_pos, p)):
            vals = values[pos]
            if pos in named or (len(set(vals)) == len(vals) and len(vals) > 1):
                continue
            if all(re.fullmatch(r"[A-Za-z0-9-]*\d[A-Za-z0-9-]*", v) for v in vals) and not any(
                looks_like_date(v) for v in vals
            ):
                named[pos], classes["plate"] = "plate", r"[^/_]+"
                break
    if not named:
        return None
    last = max(named)
    parts = []
    for i, n in enumerate(shape):
        if i > last[0]:
            break
        tokens = []
        for j in range(n):
            if (i, j) > last:
                break
            name = named.get((i, j))
            tokens.append(f"(?P<{name}>{classes[name]})" if name else r"[^/_]+")
        parts.append("_".join(tokens))
    tail = "/" if last[1] == shape[last[0]] - 1 and last[0] < len(shape) - 1 else (
        r"\." if last[1] == shape[last[0]] - 1 else "_"
    )
    pattern = "^" + "/".join(parts) + tail
    regex = re.compile(pattern)
    for path, parts_of in zip(paths, split, strict=True):
        if tuple(len(s) for s in parts_of) != shape:
            continue
        match = regex.search(path.replace(os.sep, "/"))
        if not match:
            return None
        for pos, name in named.items():
            if match[name] != parts_of[pos[0]][pos[1]]:
                return None
    return pattern


# --------------------------------------------------------------------------- suggestions


def known_labels(catalogue_dir: Path | str) -> dict[str, list[tuple[str, str]]]:
    """Native label (lower case) -> [(institution, class)] over a catalogue folder.

    Read leniently, file by file: a draft still being filled in, or a broken file, is
    skipped rather than stopping ``marco sources add``.
    """
    known: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(Path(catalogue_dir).glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(data, Mapping) or not isinstance(data.get("labels"), list):
            continue
        code = str(data.get("code") or path.stem)
        for entry in data["labels"]:
            if isinstance(entry, Mapping) and entry.get("class") in CLASS_IDS:
                native = str(entry.get("native", "")).strip().lower()
                known.setdefault(native, []).append((code, str(entry["class"])))
    return known


def _word_classes(native: str) -> tuple[list[str], list[str]]:
    """Classes whose words occur in ``native``, and the words that matched."""
    text = native.lower().replace("_", " ")
    tokens = _TOKEN.findall(text)
    kept = [t for i, t in enumerate(tokens) if not (i and tokens[i - 1] in NEGATIONS)]
    kept = [t for t in kept if t not in NEGATIONS]
    joined = "".join(kept)
    found: list[str] = []
    words: list[str] = []
    for class_name in CLASS_PRECEDENCE:
        for word in CLASS_WORDS[class_name]:
            hit = word in joined if len(word) >= SUBSTRING_MIN else word in kept
            if hit:
                found.append(class_name)
                words.append(word)
                break
    return found, words


def suggest_class(
    native: str, known: Mapping[str, list[tuple[str, str]]] | None = None
) -> Suggestion | None:
    """A class suggested by a label's words or by other institutions' use of the word.

    Returns None when nothing points anywhere. A purely numeric label only gets a
    reminder that scores are lab-specific.
    """
    text = native.strip()
    if _NUMERIC.match(text):
        return Suggestion(None, "a numeric score: its meaning is the lab's own scoring scheme")
    lowered = text.lower()
    if any(phrase in lowered.replace("_", " ") for phrase in OTHER_PHRASES):
        return Suggestion("other", "no drop or no image is MARCO's 'other'")
    uses = (known or {}).get(lowered, [])
    if uses:
        by_class: dict[str, list[str]] = {}
        for code, class_name in uses:
            by_class.setdefault(class_name, []).append(code)
        chosen = max(by_class, key=lambda c: (len(by_class[c]), -CLASS_IDS[c]))
        where = "; ".join(f"{c} at {', '.join(codes)}" for c, codes in by_class.items())
        return Suggestion(chosen, f"the same word is {where}")
    found, words = _word_classes(text)
    if not found:
        return None
    if len(found) == 1:
        return Suggestion(found[0], f"the word {words[0]!r}")
    parts = ", ".join(f"{c} ({w!r})" for c, w in zip(found, words, strict=True))
    return Suggestion(
        found[0],
        f"a combined label: {parts}; MARCO gives a combined label the first of "
        f"{' > '.join(CLASS_PRECEDENCE)}",
    )
