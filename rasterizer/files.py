"""Small file helpers shared by every writer: atomic writes and a file-format error type."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

__all__ = ["FileFormatError", "atomic_write", "atomic_path", "atomic_write_bytes", "atomic_write_text", "read_json"]


class FileFormatError(ValueError):
    """A file exists but cannot be understood; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _temporary_beside(target: Path) -> tuple[int, str]:
    """(open descriptor, name) of a new temporary file in ``target``'s folder (made if need be),
    with the permissions a plain open() would give (mkstemp makes 0600 files)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return handle, temporary


def read_json(path: str | os.PathLike, missing: str) -> object:
    """The JSON document in ``path``. A missing file raises ``FileNotFoundError("<path>: <missing>")``;
    one that is not UTF-8 JSON raises :class:`FileFormatError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileFormatError(path, f"not valid JSON ({error})") from None


@contextlib.contextmanager
def _replacing(target: Path) -> Iterator[tuple[int, str]]:
    """(open descriptor, name) of a temporary file beside ``target``: when the block ends without
    an error the file replaces ``target`` in one rename; on any error (Ctrl-C included) it is
    removed, and ``target`` is untouched."""
    handle, temporary = _temporary_beside(target)
    try:
        yield handle, temporary
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename.

    A crash or Ctrl-C while writing leaves the previous file untouched and no partial file.
    """
    with _replacing(Path(path)) as (handle, _temporary), os.fdopen(handle, mode) as stream:
        yield stream
        stream.flush()
        os.fsync(stream.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path``, for writers that take a name (a library's
    ``save(name)``); on success the file written there replaces ``path`` in one rename, as with
    :func:`atomic_write`. A crash or Ctrl-C leaves ``path`` untouched and no temporary file."""
    with _replacing(Path(path)) as (handle, temporary):
        os.close(handle)
        yield Path(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as stream:
        stream.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    # UTF-8 regardless of the locale (readers decode UTF-8) and no newline translation.
    atomic_write_bytes(path, text.encode("utf-8"))
