"""What ``marco sources add`` found in a new institution's folder, and the catalogue
entry it describes.

:class:`Detection` is the result of sniffing (:mod:`.sniff`); :func:`draft_source`
turns it into a :class:`components.catalogue.Source`, which the real readers read
(to count the records) and :func:`components.catalogue.source_document` writes (the
draft file).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.catalogue import Imaging, Layout, NativeLabel, Source


class DraftError(ValueError):
    """The folder fits no layout, or the draft cannot be written; the message says why."""


@dataclass
class Detection:
    """What was found in a new institution's folder."""

    reader: str
    # Layout options exactly as the catalogue file states them (paths relative to the
    # data root, the folder the pipeline's data_dir points at).
    options: dict[str, Any]
    described_from: str  # the manifest, export or root folder that was recognised
    records: int = 0
    files_found: int = 0
    labels: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    bad_records: Counter = field(default_factory=Counter)
    bad_examples: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    imaging: dict[str, Any] | None = None
    images_sampled: int = 0
    # File type (extension, '' for none) -> (files found and not used, why).
    skipped: dict[str, tuple[int, str]] = field(default_factory=dict)
    # The catalogue's path_prefixes: an imager's absolute path prefix -> folder below
    # the data root, when the records name images where the imager stored them.
    path_prefixes: dict[str, str] = field(default_factory=dict)

    @property
    def record_fields(self) -> dict[str, str]:
        return dict(Layout(self.reader, self.options).record_fields)


def draft_source(
    code: str,
    detection: Detection,
    labels: Iterable[str] = (),
    *,
    name: str | None = None,
    imager: str | None = None,
    setup: str | None = None,
) -> Source:
    """The catalogue entry a detection describes; what is unknown is left empty."""
    imaging = Imaging()
    if detection.imaging:
        imaging = Imaging(**{**detection.imaging, "formats": tuple(detection.imaging["formats"])})
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in detection.options.items()}
    return Source(
        code=code, name=name or "", imager=imager or "", setup=setup or "",
        layout=Layout(detection.reader, options),
        labels=tuple(NativeLabel(native, "") for native in labels),
        file=Path(f"{code}.yaml"), imaging=imaging,
        path_prefixes=tuple(detection.path_prefixes.items()),
    )
