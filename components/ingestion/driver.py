"""Driver of ImageExampleGen: fingerprints the inputs so the cache notices new data.

ImageExampleGen has no input artifacts, so TFX's cache key is only its parameters:
without this driver a second run over a changed data folder would reuse the old
Examples. Like FileBasedExampleGen's driver, it adds an ``input_fingerprint`` execution
property (file listing only: paths, sizes and modification times of every unit and
image file, plus the catalogue's content and its label overrides), which the cache key
includes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from apache_beam.io.filesystems import FileSystems

from components import filesystem
from components.catalogue import Catalogue, load_catalogue
from components.drivers import ComputedPropertyDriver
from components.ingestion import beam_stages
from components.ingestion.executor import FINGERPRINT_KEY


def _stat_line(path: str) -> str:
    try:
        size, mtime_ns = filesystem.stat(path)
        return f"{path}\t{size}\t{mtime_ns}"
    except OSError:
        return f"{path}\tmissing"


def input_fingerprint(catalogue: Catalogue, units: list[beam_stages.WorkUnit]) -> str:
    """A digest that changes whenever an input file, the catalogue or an institution's
    label overrides change.

    Layout units are stat-ed on whatever file system holds them (label folders are
    walked, since adding an image to one changes no manifest); published shards on a
    Beam file system report size and update time.
    """
    digest = hashlib.sha256()
    for source in catalogue:
        digest.update(source.file.read_bytes())
        # An expert's label overrides change the examples as a data change does.
        if source.overrides_file is not None:
            digest.update(f"overrides\t{source.code}\n".encode())
            digest.update(source.overrides_file.read_bytes())
    for unit in units:
        if unit.kind == beam_stages.LAYOUT_UNIT and filesystem.isdir(unit.path):
            for dirpath, _, filenames in filesystem.walk(unit.path):
                for name in filenames:
                    digest.update(_stat_line(filesystem.join(dirpath, name)).encode())
        elif unit.kind == beam_stages.LAYOUT_UNIT or os.path.exists(unit.path):
            digest.update(_stat_line(unit.path).encode())
        else:
            for match in FileSystems.match([unit.path])[0].metadata_list:
                line = f"{match.path}\t{match.size_in_bytes}\t{match.last_updated_in_seconds}"
                digest.update(line.encode())
    return digest.hexdigest()


def fingerprint_from_properties(exec_properties: dict[str, Any]) -> str:
    """List the units the executor will read and fingerprint them."""
    from components.ingestion import executor

    catalogue = load_catalogue(exec_properties.get(executor.CATALOGUE_DIR_KEY) or None)
    units = beam_stages.list_work_units(
        catalogue,
        exec_properties.get(executor.DATA_DIR_KEY) or None,
        exec_properties.get(executor.MARCO_SHARDS_KEY) or None,
        json.loads(exec_properties.get(executor.INSTITUTIONS_KEY) or "null"),
    )
    return input_fingerprint(catalogue, units)


class Driver(ComputedPropertyDriver):
    """Adds ``input_fingerprint`` to the execution properties and the Examples."""

    KEY = FINGERPRINT_KEY
    TAG_OUTPUTS = True

    def compute(self, exec_properties: Mapping[str, Any]) -> str:
        return fingerprint_from_properties(dict(exec_properties))
