"""The curated TFDV schema of the example format, generated from the source catalogue.

``schemas/schema.pbtxt`` is what ImportSchemaGen feeds to ExampleValidator and
Transform. Its string domains (institution codes, native labels) come from the
catalogue, so a new institution or label is added by writing YAML and running
``marco schema update``; ``marco schema check`` (and a test) fail while the two
disagree. Everything else in it is curated here, once: which features are required,
their shapes (Transform parses a feature with a fixed shape as dense), value ranges.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components.catalogue import Catalogue
from components.imagecheck import EXAMPLE_FORMATS, format_names
from components.names import (
    CHANNELS_KEY,
    CLASS_NAMES,
    FORMAT_KEY,
    HEIGHT_KEY,
    IMAGE_ID_KEY,
    IMAGE_KEY,
    IMAGED_AT_KEY,
    INSTITUTION_KEY,
    LABEL_SOURCE_KEY,
    NATIVE_LABEL_KEY,
    OVERRIDE_CLASS_KEY,
    PLATE_KEY,
    SOURCE_PATH_KEY,
    WELL_KEY,
    WIDTH_KEY,
)
from components.records import LABEL_SOURCES
from schemas import SCHEMA_FILE

INSTITUTION_DOMAIN = "institution"
NATIVE_LABEL_DOMAIN = "native_label"
FORMAT_DOMAIN = "image_format"
LABEL_SOURCE_DOMAIN = "label_source"
CLASS_DOMAIN = "class_name"
MAX_SIDE = 65_535
MAX_CHANNELS = 4

HEADER = (
    "# The TFDV schema of the MARCO example format (ImportSchemaGen -> ExampleValidator,\n"
    "# Transform). Generated from schemas/sources/*.yaml by `marco schema update`;\n"
    "# edit components/schema_gen.py or the catalogue, never this file.\n"
)

# Features written by ingestion for every example.
REQUIRED_BYTES = (FORMAT_KEY, INSTITUTION_KEY, NATIVE_LABEL_KEY, IMAGE_ID_KEY, SOURCE_PATH_KEY)
# Written only when the institution records them.
OPTIONAL_BYTES = (PLATE_KEY, WELL_KEY, IMAGED_AT_KEY)
# Where the label comes from, and an expert's class (see components/records.py).
# Ingestion writes label_source on every example; both are optional here so that
# examples made before overrides existed still parse.
LABEL_ORIGIN_BYTES = ((LABEL_SOURCE_KEY, LABEL_SOURCE_DOMAIN), (OVERRIDE_CLASS_KEY, CLASS_DOMAIN))


def _required(schema: schema_pb2.Schema, name: str, kind: int) -> schema_pb2.Feature:
    feature = schema.feature.add(name=name, type=kind)
    feature.presence.min_fraction = 1.0
    feature.presence.min_count = 1
    feature.shape.dim.add(size=1)
    return feature


def build_schema(catalogue: Catalogue) -> schema_pb2.Schema:
    """The schema for examples ingested with ``catalogue``.

    The native-label domain is the union over institutions: TFDV domains cannot depend
    on another feature, so a label known to one institution but unmapped for another
    passes here; ingestion quarantines that case against the catalogue.
    """
    schema = schema_pb2.Schema()
    # image_domain makes TFDV treat the bytes as bytes (sizes only: no UTF-8 decoding,
    # no top-k of encoded images) when StatisticsGen is given this schema.
    image = _required(schema, IMAGE_KEY, schema_pb2.BYTES)
    image.image_domain.SetInParent()

    for name in REQUIRED_BYTES:
        feature = _required(schema, name, schema_pb2.BYTES)
        if name == FORMAT_KEY:
            feature.domain = FORMAT_DOMAIN
        elif name == INSTITUTION_KEY:
            feature.domain = INSTITUTION_DOMAIN
        elif name == NATIVE_LABEL_KEY:
            feature.domain = NATIVE_LABEL_DOMAIN
    for name in (HEIGHT_KEY, WIDTH_KEY):
        feature = _required(schema, name, schema_pb2.INT)
        feature.int_domain.min = 1
        feature.int_domain.max = MAX_SIDE
    channels = _required(schema, CHANNELS_KEY, schema_pb2.INT)
    channels.int_domain.min = 1
    channels.int_domain.max = MAX_CHANNELS
    for name in OPTIONAL_BYTES:
        feature = schema.feature.add(name=name, type=schema_pb2.BYTES)
        feature.presence.min_count = 0
        feature.value_count.min = 1
        feature.value_count.max = 1
    for name, domain in LABEL_ORIGIN_BYTES:
        feature = schema.feature.add(name=name, type=schema_pb2.BYTES)
        feature.presence.min_count = 0
        feature.value_count.min = 1
        feature.value_count.max = 1
        feature.domain = domain

    schema.string_domain.add(name=FORMAT_DOMAIN, value=list(format_names(EXAMPLE_FORMATS)))
    schema.string_domain.add(name=INSTITUTION_DOMAIN, value=sorted(catalogue.codes))
    labels = sorted({native for _, native in catalogue.native_labels()})
    schema.string_domain.add(name=NATIVE_LABEL_DOMAIN, value=labels)
    schema.string_domain.add(name=LABEL_SOURCE_DOMAIN, value=list(LABEL_SOURCES))
    schema.string_domain.add(name=CLASS_DOMAIN, value=list(CLASS_NAMES))
    return schema


def render_schema(catalogue: Catalogue) -> str:
    """The exact text of ``schema.pbtxt`` for ``catalogue``."""
    return HEADER + text_format.MessageToString(build_schema(catalogue))


def stale_reason(catalogue: Catalogue, path: Path = SCHEMA_FILE) -> str | None:
    """Why the schema file does not match the catalogue, or None when it does."""
    if not path.is_file():
        return f"{path} does not exist"
    current = path.read_text(encoding="utf-8")
    if current == render_schema(catalogue):
        return None
    try:
        written = text_format.Parse(current, schema_pb2.Schema())
    except text_format.ParseError as exc:
        return f"{path} is not a valid schema: {exc}"
    expected = build_schema(catalogue)
    problems = []
    domains = {d.name: list(d.value) for d in written.string_domain}
    for domain in expected.string_domain:
        have = domains.get(domain.name, [])
        missing = sorted(set(domain.value) - set(have))
        extra = sorted(set(have) - set(domain.value))
        if missing:
            problems.append(f"domain {domain.name!r} lacks {missing}")
        if extra:
            problems.append(f"domain {domain.name!r} has values not in the catalogue: {extra}")
    if not problems:
        problems.append("its text differs from what `marco schema update` writes")
    return f"{path} is stale: " + "; ".join(problems)


def update_schema(catalogue: Catalogue, path: Path = SCHEMA_FILE) -> bool:
    """Rewrite the schema file from the catalogue; True when its content changed."""
    text = render_schema(catalogue)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True
