"""Drafting a new institution's catalogue file from its files (``marco sources add``).

A new lab sends a folder of drop images and, usually, some record of what each image
shows. :mod:`.sniff` looks at that folder and decides which layout reader fits (a
delimited manifest, a JSON-lines export, an XML export or one folder per label);
:mod:`.roles` works out which column, key or element path holds the image path, the
label and the optional image id, plate, well and imaging time, and suggests classes;
:mod:`.write` writes ``CODE.yaml`` with each label's class left empty and says what
was found. :mod:`.detection` holds what sniffing found.
"""

from components.tools.drafting.detection import Detection, DraftError
from components.tools.drafting.roles import detect_path_pattern, known_labels, suggest_class
from components.tools.drafting.sniff import inspect_institution, sniff_delimiter
from components.tools.drafting.write import add_source, check_draft_text, describe, render_draft

__all__ = [
    "Detection",
    "DraftError",
    "add_source",
    "check_draft_text",
    "describe",
    "detect_path_pattern",
    "inspect_institution",
    "known_labels",
    "render_draft",
    "sniff_delimiter",
    "suggest_class",
]
