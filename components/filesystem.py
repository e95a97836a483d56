"""File access for the layout readers and image checks, on local disks and object stores.

Local paths go through ``os`` and ``glob`` exactly as a plain script would. Any path
with a scheme (``gs://bucket/...`` on Dataflow and Vertex AI, ``ram://`` in tests, or
any other file system TensorFlow knows) goes through ``tf.io.gfile``; TensorFlow is
only imported when such a path is met, so local commands stay quick. Errors come back
as ``OSError`` subclasses whatever the file system, so callers handle one kind.
"""

from __future__ import annotations

import contextlib
import errno
import glob as local_glob
import io
import os
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path

SCHEME_SEPARATOR = "://"
# A Windows drive path (``C:\\`` or ``C:/``); UNC paths start with two backslashes.
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def is_remote(path: str) -> bool:
    """True for ``scheme://...`` paths (object stores), False for local ones."""
    return SCHEME_SEPARATOR in str(path)


def is_windows_absolute(path: str) -> bool:
    """True for ``C:\\...``, ``C:/...`` and ``\\\\server\\share\\...`` (or ``\\...``)."""
    return path.startswith("\\") or _WINDOWS_DRIVE.match(path) is not None


def _split(path: str) -> tuple[str, str]:
    scheme, rest = str(path).split(SCHEME_SEPARATOR, 1)
    return scheme, rest


def _unsplit(scheme: str, rest: str) -> str:
    return f"{scheme}{SCHEME_SEPARATOR}{rest}"


def normalise(path: str) -> str:
    """A local path as ``pathlib`` writes it; a remote one unchanged but for its end slash."""
    return str(path).rstrip("/") if is_remote(path) else str(Path(path))


def is_absolute(path: str) -> bool:
    """True for a URL, a POSIX absolute path, and a Windows one (``C:\\...``, ``\\\\server\\...``).

    Imagers running Windows write their own storage paths into exports; on the
    pipeline's Linux machines such a path is still absolute, never a file name.
    """
    path = str(path)
    return (
        is_remote(path)
        or path.startswith("/")
        or is_windows_absolute(path)
    )


def join(base: str, relative: str) -> str:
    """``relative`` resolved against the folder ``base``.

    A ``relative`` that is absolute (:func:`is_absolute`: a URL, a POSIX or a Windows
    absolute path) is returned as it is, whatever ``base`` is. Below a remote
    ``base``, ``.`` and ``..`` are resolved textually, since object stores have no
    real folders. Joining never checks where the result lies: :func:`contains` does.
    """
    relative = str(relative)
    if is_absolute(relative):
        return relative
    if not is_remote(base):
        return str(Path(base) / relative)
    scheme, rest = _split(base)
    return _unsplit(scheme, posixpath.normpath(posixpath.join(rest, relative)))


def resolve(path: str) -> str:
    """``path`` with ``.``, ``..`` and (on a local disk) symbolic links resolved.

    Local paths go through ``os.path.realpath``, which reads links but opens no
    file. Object stores have neither folders nor links: ``..`` is resolved textually.
    """
    if not is_remote(path):
        return os.path.realpath(path)
    scheme, rest = _split(path)
    return _unsplit(scheme, posixpath.normpath(rest))


def contains(root: str, path: str) -> bool:
    """Whether ``path`` lies inside the folder ``root`` once both are resolved.

    A local path is never inside a remote root nor the other way round; a URL is
    inside a remote root only on the same file system and below the same bucket and
    folder (``gs://b/data2/x`` is not inside ``gs://b/data``). A Windows absolute
    path is inside no root of this machine.
    """
    root, path = str(root), str(path)
    if is_remote(root) != is_remote(path) or is_windows_absolute(path):
        return False
    if is_remote(root):
        root_scheme, root_rest = _split(resolve(root))
        scheme, rest = _split(resolve(path))
        root_rest = root_rest.rstrip("/")
        return scheme == root_scheme and (rest == root_rest or rest.startswith(root_rest + "/"))
    resolved_root = resolve(root)
    resolved = resolve(path)
    return resolved == resolved_root or resolved.startswith(resolved_root.rstrip(os.sep) + os.sep)


def parent(path: str) -> str:
    """The folder holding ``path``."""
    if not is_remote(path):
        return str(Path(path).parent)
    scheme, rest = _split(normalise(path))
    return _unsplit(scheme, posixpath.dirname(rest))


def name(path: str) -> str:
    """The last component of ``path`` (a file or folder name)."""
    if not is_remote(path):
        return Path(path).name
    return posixpath.basename(_split(normalise(path))[1])


def relative_to(path: str, base: str) -> str:
    """``path`` below ``base``, with ``/`` separators."""
    if not is_remote(path):
        return Path(path).relative_to(base).as_posix()
    return posixpath.relpath(_split(normalise(path))[1], _split(normalise(base))[1])


@contextlib.contextmanager
def _os_errors(path: str) -> Iterator[None]:
    """Turn TensorFlow's file-system errors into the matching ``OSError``."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.NotFoundError as exc:
        raise FileNotFoundError(errno.ENOENT, exc.message, path) from None
    except tf.errors.PermissionDeniedError as exc:
        raise PermissionError(errno.EACCES, exc.message, path) from None
    except tf.errors.OpError as exc:
        raise OSError(errno.EIO, exc.message, path) from None


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    with _os_errors(path):
        return _gfile().exists(path)


def isdir(path: str) -> bool:
    if not is_remote(path):
        return os.path.isdir(path)
    with _os_errors(path):
        return _gfile().isdir(path)


def isfile(path: str) -> bool:
    if not is_remote(path):
        return os.path.isfile(path)
    with _os_errors(path):
        return _gfile().exists(path) and not _gfile().isdir(path)


def glob(pattern: str) -> list[str]:
    """Paths matching a ``*``/``?``/``[...]`` pattern, sorted."""
    if not is_remote(pattern):
        return sorted(local_glob.glob(pattern))
    with _os_errors(pattern):
        return sorted(_gfile().glob(pattern))


def subfolders(path: str) -> list[str]:
    """Full paths of the folders directly inside ``path``, sorted."""
    if not is_remote(path):
        return sorted(str(p) for p in Path(path).iterdir() if p.is_dir())
    gfile = _gfile()
    base = normalise(path)
    with _os_errors(path):
        entries = [e.rstrip("/") for e in gfile.listdir(base)]
        return sorted(f"{base}/{e}" for e in entries if gfile.isdir(f"{base}/{e}"))


def walk(path: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` over any file system: top-down, folders and files in sorted order."""
    if not is_remote(path):
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            yield dirpath, dirnames, sorted(filenames)
        return
    with _os_errors(path):
        for dirpath, dirnames, filenames in _gfile().walk(normalise(path)):
            # Sorted in place: gfile's top-down walk descends into this same list.
            dirnames[:] = sorted(d.rstrip("/") for d in dirnames)
            yield normalise(dirpath), dirnames, sorted(filenames)


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with open(path, "rb") as handle:
            return handle.read()
    with _os_errors(path), _gfile().GFile(path, "rb") as handle:
        return handle.read()


def open_text(
    path: str, encoding: str = "utf-8", newline: str | None = None, errors: str = "strict"
) -> io.TextIOBase:
    """A text file opened for reading, as ``open(path, encoding=..., newline=...,
    errors=...)`` does.

    A remote file is read whole and decoded in memory (a manifest or label export,
    not image data).
    """
    if not is_remote(path):
        return open(path, encoding=encoding, newline=newline, errors=errors)
    text = read_bytes(path).decode(encoding, errors)
    return io.StringIO(text, newline=newline)


def stat(path: str) -> tuple[int, int]:
    """(size in bytes, modification time in nanoseconds) of a file."""
    if not is_remote(path):
        result = os.stat(path)
        return result.st_size, result.st_mtime_ns
    with _os_errors(path):
        result = _gfile().stat(path)
    return result.length, result.mtime_nsec
