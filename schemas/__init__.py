"""Data files of the project: the source catalogue and the curated TFDV schema."""

from pathlib import Path

SCHEMAS_DIR = Path(__file__).resolve().parent
SOURCES_DIR = SCHEMAS_DIR / "sources"
SCHEMA_FILE = SCHEMAS_DIR / "schema.pbtxt"
