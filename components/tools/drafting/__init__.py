from components.tools.drafting._all import (  # noqa: F401
    Detection,
    DraftError,
    add_source,
    check_draft_text,
    describe,
    detect_path_pattern,
    inspect_institution,
    known_labels,
    render_draft,
    sniff_delimiter,
    suggest_class,
)
