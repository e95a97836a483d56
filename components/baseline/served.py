"""The serving folder as TF Serving reads it: numbered version folders, each a SavedModel.

The Pusher writes one folder per blessed model, ``<serving dir>/<version>/``, where
``<version>`` is an integer (a Unix timestamp); TF Serving serves the highest. A
version folder counts once its ``saved_model.pb`` is there (the Pusher copies that
file last). Folders with other names are not versions and are ignored.

Beside the SavedModel's own files, the Pusher leaves a push record in the version
folder (:data:`PUSH_RECORD`, under ``assets.extra/``, where TF Serving keeps extra
files it does not load): the URI and id of the Model artifact it pushed, and the
content digest of the SavedModel. Paths may be local or on any file system
TensorFlow knows (``gs://``); local ones never import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from components import filesystem

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
PUSH_RECORD = "assets.extra/marco_push.json"
# Keys of the push record.
RECORD_MODEL_URI = "model_uri"
RECORD_MODEL_ID = "model_id"
RECORD_DIGEST = "digest"
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class ServedVersion:
    """One version folder of a serving folder."""

    version: str
    path: str


def _is_saved_model(path: str) -> bool:
    return any(filesystem.exists(filesystem.join(path, name)) for name in SAVED_MODEL_FILES)


def newest_served(serving_dir: str) -> ServedVersion | None:
    """The highest numbered version folder holding a SavedModel; None when there is none.

    A missing serving folder has no versions.
    """
    if not serving_dir or not filesystem.isdir(serving_dir):
        return None
    versions = sorted(
        (int(filesystem.name(folder)), folder)
        for folder in filesystem.subfolders(serving_dir)
        if filesystem.name(folder).isdigit()
    )
    for number, folder in reversed(versions):
        if _is_saved_model(folder):
            return ServedVersion(str(number), folder)
    return None


def init_model(path: str) -> ServedVersion:
    """The SavedModel an ``init_from`` path names: its newest version, or itself.

    ``path`` is a serving folder (the newest numbered version is taken, as TF Serving
    takes it), or a SavedModel folder, whose ``version`` is then "".

    Raises:
        FileNotFoundError: naming ``path`` when it holds no SavedModel either way.
    """
    if path and _is_saved_model(path):
        return ServedVersion("", path)
    newest = newest_served(path)
    if newest is None:
        raise FileNotFoundError(
            f"init model {path}: no SavedModel there, and no numbered version folder "
            "holding one (give a serving folder, e.g. marco import-released's --out, "
            "or one of its version folders)"
        )
    return newest


def newest_served_version(serving_dir: str) -> str:
    """The name of the newest served version in ``serving_dir``; "" when none is served.

    ServedModelBaseline's cache key: its local driver calls this when the component
    runs, and a Kubeflow or Vertex AI submission passes its result as a runtime
    parameter.
    """
    served = newest_served(serving_dir)
    return served.version if served else ""


INIT_SOURCE = "init"


def init_version_key(init: ServedVersion) -> str:
    """The baseline's ``served_version`` when it is the init model: ``init:<version>``.

    ``init`` alone for a bare SavedModel folder.
    """
    return f"{INIT_SOURCE}:{init.version}" if init.version else INIT_SOURCE


def baseline_key(serving_dir: str, init_from: str | None = None) -> str:
    """ServedModelBaseline's cache key: what the baseline will be when the run starts.

    The newest served version's name; while nothing is served, the init model's key
    (:func:`init_version_key`), so a new version in the ``init_from`` serving folder
    (a re-import, a newer earlier model) is noticed as a push is; "" when there is
    neither. The local driver computes it when the component runs, and a Kubeflow or
    Vertex AI submission passes it as the ``served_version`` runtime parameter.

    Raises:
        FileNotFoundError: ``init_from`` is given, nothing is served, and it holds no
            SavedModel (:func:`init_model`).
    """
    version = newest_served_version(serving_dir)
    if version or not init_from:
        return version
    return init_version_key(init_model(init_from))


def saved_model_digest(path: str) -> str:
    """SHA-256 over the relative path, size and content of every file of a SavedModel.

    The push record is left out, so a served version and the model it was pushed
    from have the same digest.
    """
    digest = hashlib.sha256()
    root = filesystem.normalise(path)
    for dirpath, _, filenames in filesystem.walk(root):
        for name in filenames:
            full = filesystem.join(dirpath, name)
            relative = filesystem.relative_to(full, root)
            if relative == PUSH_RECORD:
                continue
            content = hashlib.sha256()
            size = 0
            for chunk in _read_chunks(full):
                content.update(chunk)
                size += len(chunk)
            digest.update(f"{relative}\0{size}\0{content.hexdigest()}\n".encode())
    return digest.hexdigest()


def _read_chunks(path: str):
    from tfx.dsl.io import fileio

    with fileio.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def read_push_record(version_path: str) -> dict:
    """The push record of a version folder; {} when it has none or it is unreadable."""
    path = filesystem.join(version_path, PUSH_RECORD)
    if not filesystem.exists(path):
        return {}
    try:
        record = json.loads(filesystem.read_bytes(path))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_push_record(version_path: str, record: dict) -> None:
    """Writes the push record into a version folder."""
    from tfx.dsl.io import fileio

    path = filesystem.join(version_path, PUSH_RECORD)
    fileio.makedirs(filesystem.parent(path))
    with fileio.open(path, "w") as handle:
        handle.write(json.dumps(record, sort_keys=True, indent=1))
