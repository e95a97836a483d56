"""Writing the draft catalogue file of a new institution, checking it, and saying what
was found (``marco sources add``).

The draft is :func:`components.catalogue.source_document` of what was detected, as
YAML, with comments: what to fill in, and each native label's count, examples and
suggested class. Classes are never filled in: the words a lab uses ("ppt", "xtal",
"5") mean what its scoring guide says, so a person decides.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.catalogue import (
    CODE_PATTERN,
    CatalogueError,
    load_source_file,
    parse_source,
    source_document,
)
from components.names import CLASS_NAMES
from components.tools.drafting.detection import Detection, DraftError, draft_source
from components.tools.drafting.roles import Suggestion, known_labels, suggest_class
from components.tools.drafting.sniff import DELIMITER_NAMES, inspect_institution
from schemas import SOURCES_DIR


@dataclass
class Draft:
    """A drafted catalogue file: the detection, the suggestions and the YAML text."""

    code: str
    path: Path
    data_root: Path
    detection: Detection
    suggestions: dict[str, Suggestion]
    text: str
    missing: list[str]  # top-level keys left for the engineer


class _DraftDumper(yaml.SafeDumper):
    """Safe YAML as the catalogue files are written: list items indented, blanks empty."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


_DraftDumper.add_representer(
    type(None), lambda dumper, _: dumper.represent_scalar("tag:yaml.org,2002:null", "")
)


def _yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_DraftDumper, sort_keys=False, allow_unicode=True,
                     width=1 << 16)


def _comment(text: str) -> str:
    """Text safe inside a one-line YAML comment."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _label_order(labels: Counter) -> list[str]:
    return sorted(labels, key=lambda n: (-labels[n], n))


def render_draft(
    code: str,
    detection: Detection,
    *,
    name: str | None,
    imager: str | None,
    setup: str | None,
    suggestions: Mapping[str, Suggestion | None],
    data_root_display: str,
    command: str,
) -> str:
    """The text of the draft ``CODE.yaml``: the catalogue entry, with blanks and comments.

    The entry is :func:`components.catalogue.source_document` of what was detected, as
    YAML; the comments say what to fill in, and give each label's count, examples and
    suggested class.
    """
    classes = ", ".join(CLASS_NAMES)
    order = _label_order(detection.labels)
    source = draft_source(code, detection, order, name=name, imager=imager, setup=setup)
    document = source_document(source)
    if not detection.imaging:
        del document["imaging"]
    labels = document.pop("labels")
    total = sum(detection.labels.values())
    comments = {
        "imaging": [
            f"The images as {detection.images_sampled} sampled files show them; "
            "`marco synth` draws look-alike images from this.",
        ],
        "path_prefixes": [
            "The records name images where the imager stored them; these prefixes map",
            "them onto folders of the data folder (as detected from the files found): check.",
        ],
        "layout": [
            "Where the label records are, as detected: check it. Paths are relative to the",
            f"data folder the pipeline reads ({_comment(data_root_display)}).",
        ],
    }
    lines = [
        f"# {code}: draft catalogue file written by `{_comment(command)}`.",
        "# Before the catalogue accepts it, fill in name, imager and setup if empty, and give",
        f"# every native label below a class: one of {classes}.",
        "# The loader refuses this file while any of them is empty. Then run",
        "#   marco sources validate DATA_DIR   (counts, unmapped labels, id collisions)",
        "#   marco schema update               (adds the institution and labels to the schema)",
        "# See docs/data-engineers.md for every key.",
        "",
    ]
    for line in _yaml(document).splitlines():
        key = line.split(":", 1)[0]
        lines.extend(f"# {text}" for text in comments.get(key, ()))
        blank = line == f"{key}:" and key in document and document[key] is None
        lines.append(f"{line}    # fill in" if blank else line)
    lines += [
        f"# Every native label found: {len(order)} labels in {total} records. Suggestions come",
        "# from the words and from other institutions' files and are NOT filled in: check",
        "# each against the lab's scoring guide ('other' was used inconsistently across",
        "# sources). Optional per label: description (what the lab means by it).",
        "labels:",
    ]
    for native, entry in zip(order, labels, strict=True):
        count = detection.labels[native]
        examples = _comment(", ".join(detection.examples.get(native, [])[:2]))
        lines.append(f"  # {native!r}: {count} image{'s' if count != 1 else ''}; e.g. {examples}")
        suggestion = suggestions.get(native)
        if suggestion is not None and suggestion.class_name:
            lines.append(f"  # suggestion: {suggestion.class_name} ({suggestion.reason})")
        elif suggestion is not None:
            lines.append(f"  # note: {suggestion.reason}")
        lines.append(textwrap.indent(_yaml([entry]), "  ").rstrip("\n")
                     + f"    # fill in: {classes}")
    return "\n".join(lines) + "\n"


def check_draft_text(path: Path, text: str, labels: Iterable[str]) -> None:
    """Prove a draft is a valid catalogue file once its blanks are filled.

    Raises:
        RuntimeError: when the text would not load, or lists other labels than found;
            a draft must never fail for any reason but the blanks left for a person.
    """
    data = yaml.safe_load(text)
    for key in ("name", "imager", "setup"):
        data[key] = data.get(key) or "to be filled"
    for entry in data["labels"]:
        entry["class"] = CLASS_NAMES[0]
    source = parse_source(path, data)
    if [lab.native for lab in source.labels] != list(labels):
        raise RuntimeError(f"{path}: the draft's labels do not read back as written")


def existing_codes(catalogue_dir: Path) -> dict[str, Path]:
    """Institution code -> file, for every file of a catalogue folder (read leniently)."""
    codes: dict[str, Path] = {}
    for path in sorted(catalogue_dir.glob("*.yaml")) + sorted(catalogue_dir.glob("*.yml")):
        code = path.stem
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, Mapping) and data.get("code"):
                code = str(data["code"])
        except (OSError, yaml.YAMLError):
            pass
        codes.setdefault(code, path)
    return codes


def add_source(
    code: str,
    folder: Path | str,
    catalogue_dir: Path | str,
    *,
    data_root: Path | str | None = None,
    name: str | None = None,
    imager: str | None = None,
    setup: str | None = None,
    force: bool = False,
    label_column: str | None = None,
    path_column: str | None = None,
    command: str | None = None,
) -> Draft:
    """Inspect ``folder`` and write the draft ``CODE.yaml`` into ``catalogue_dir``.

    Raises:
        DraftError: for a malformed code, a code already in the catalogue, an existing
            file without ``force``, or a folder no layout fits.
    """
    if not CODE_PATTERN.match(code):
        raise DraftError(
            f"institution code {code!r} must be 2-16 upper-case letters, digits or '_', "
            "starting with a letter"
        )
    catalogue_dir = Path(catalogue_dir)
    if not catalogue_dir.is_dir():
        raise DraftError(f"catalogue folder {catalogue_dir} does not exist")
    target = catalogue_dir / f"{code}.yaml"
    taken = {c: p for c, p in existing_codes(catalogue_dir).items() if p != target}
    if code in taken:
        raise DraftError(f"institution {code} is already in the catalogue ({taken[code]})")
    if (catalogue_dir / f"{code}.yml").exists():
        raise DraftError(f"{catalogue_dir / f'{code}.yml'} already exists")
    if target.exists():
        try:
            load_source_file(target)
        except CatalogueError:
            pass  # a draft still being filled in, or a broken file: --force may replace it
        else:
            raise DraftError(
                f"institution {code} is already in the catalogue ({target}); edit that file, "
                "or delete it to draft it anew"
            )
        if not force:
            raise DraftError(f"{target} already exists; pass --force to overwrite it")
    folder = Path(folder).resolve()
    root = Path(data_root).resolve() if data_root is not None else folder.parent
    detection = inspect_institution(
        folder, root, code=code, label_column=label_column, path_column=path_column
    )
    known = known_labels(catalogue_dir)
    suggestions = {native: suggest_class(native, known) for native in detection.labels}
    text = render_draft(
        code,
        detection,
        name=name,
        imager=imager,
        setup=setup,
        suggestions={k: v for k, v in suggestions.items() if v is not None},
        data_root_display=str(root),
        command=command or f"marco sources add {code} --from {folder}",
    )
    check_draft_text(target, text, _label_order(detection.labels))
    target.write_text(text, encoding="utf-8")
    missing = [k for k, v in (("name", name), ("imager", imager), ("setup", setup)) if not v]
    return Draft(code, target, root, detection,
                 {k: v for k, v in suggestions.items() if v is not None}, text, missing)


def describe(draft: Draft) -> list[str]:
    """What ``marco sources add`` prints: the detection, the labels and what is left to do."""
    d = draft.detection
    lines = [f"{draft.code}: {d.reader} from {d.described_from} (paths relative to "
             f"{draft.data_root})"]
    if d.reader == "csv_manifest":
        sep = d.options.get("delimiter", ",")
        lines.append(f"  delimiter: {DELIMITER_NAMES.get(sep, repr(sep))}")
    for key in ("root", "image_root", "extensions", "path_pattern"):
        if key in d.options:
            value = d.options[key]
            lines.append(f"  {key}: {', '.join(value) if isinstance(value, list) else value}")
    what = {"csv_manifest": "column", "jsonl": "key"}.get(d.reader, "path")
    for role, name in d.record_fields.items():
        lines.append(f"  {role:<10} <- {what} {name!r}")
    if d.ignored:
        lines.append(f"  not used: {', '.join(repr(c) for c in d.ignored)}")
    lines.append(f"{d.records} records, {d.files_found} image files found")
    for ext, (count, why) in d.skipped.items():
        kind = f".{ext}" if ext else "without an extension"
        lines.append(f"skipped {kind}: {count} file{'s' if count != 1 else ''}, {why}")
    if d.imaging:
        im = d.imaging
        lines.append(f"images: {im['colour']} {'/'.join(im['formats'])} {im['width']}x"
                     f"{im['height']} (from {d.images_sampled} sampled)")
    if d.bad_records:
        counts = ", ".join(f"{k} {n}" for k, n in d.bad_records.most_common())
        lines.append(f"unreadable records: {counts}; e.g. {'; '.join(d.bad_examples)}")
    lines.append(f"native labels ({len(d.labels)}):")
    for native in _label_order(d.labels):
        suggestion = draft.suggestions.get(native)
        hint = ""
        if suggestion is not None:
            hint = (f"  suggestion: {suggestion.class_name} ({suggestion.reason})"
                    if suggestion.class_name else f"  note: {suggestion.reason}")
        example = (d.examples.get(native) or [""])[0]
        lines.append(f"  {native!r:<28} {d.labels[native]:>7}  e.g. {example}{hint}")
    for note in d.notes:
        lines.append(f"note: {note}")
    for alternative in d.alternatives:
        lines.append(f"also considered: {alternative}")
    lines.append(f"wrote {draft.path} (draft: classes left empty)")
    todo = [*draft.missing, f"the class of each of the {len(d.labels)} labels"]
    lines.append("next: fill in " + ", ".join(todo) + f" in {draft.path.name}, then")
    option = (
        "" if draft.path.parent.resolve() == SOURCES_DIR.resolve()
        else f" --catalogue {draft.path.parent}"
    )
    lines.append(f"  marco sources validate {draft.data_root}{option}")
    lines.append(f"  marco schema update{option}")
    return lines
