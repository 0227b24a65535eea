"""Atomic file writes, the one home for them: a reader sees the old file or the new one, never half.

Every write goes to a temporary file in the SAME folder as the target (so the rename never crosses
file systems), is written with unbuffered ``os.write`` (or through a file object, for writers such as
``torch.save`` that want one), ``fsync``-ed, ``os.replace``-d onto the target, and the folder is
``fsync``-ed so the rename itself survives power loss. On any failure, ENOSPC and KeyboardInterrupt
included, the temporary file is removed and the previous file is untouched (it is only replaced once
the new one is complete). The new file keeps an existing file's permissions, else follows the umask
(``mkstemp`` alone would make it 0600).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from .checks import check_file_path, check_path

__all__ = ["atomic_write", "atomic_file", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "new_file_mode"]


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries to disk so that a completed ``os.replace`` inside it survives power loss."""
    path = check_path("path", path)
    if not os.path.isdir(path):
        raise ValueError(f"path must be an existing directory, got {path!r}")
    if os.name == "nt":  # Windows cannot open folders as files; NTFS journals renames itself.
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems (e.g. certain network mounts) cannot fsync folders
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def new_file_mode(path: str | os.PathLike) -> int:
    """Mode for the new file: keep an existing file's mode, else honour the umask (mkstemp forces 0600).

    Reading the umask briefly changes it for the whole process, so a writer thread should get this
    from its caller's thread (as ``CheckpointWriter`` does) rather than work it out itself."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)  # the only portable way to read the umask is to set it and put it back
        os.umask(umask)
        return 0o666 & ~umask


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` may write fewer bytes than asked; loop until everything is out."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def _replacing(path: str, mode: int | None) -> Iterator[int]:
    """A same-folder temp file's descriptor to write into. When the block ends cleanly the file is
    fsynced and renamed onto ``path``, then the folder fsynced; on any error it is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path {path!r}: parent folder {folder!r} does not exist")
    mode = new_file_mode(path) if mode is None else mode
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        try:
            yield fd
            if hasattr(os, "fchmod"):  # not on Windows
                os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # includes KeyboardInterrupt: never leave a half-written temp file behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def atomic_write(path: str | os.PathLike, chunks: Sequence[bytes | memoryview], mode: int | None = None) -> None:
    """``chunks`` written one after the other as ``path``'s new content, atomically. The parent
    folder must exist. ``mode``: the new file's permissions (default: see :func:`new_file_mode`).

    Each chunk goes straight to ``os.write``, which releases the GIL: a writer thread writing a large
    payload this way lets training go on (``checkpoint.CheckpointWriter``)."""
    path = check_file_path("path", path)
    with _replacing(path, mode) as fd:
        for chunk in chunks:
            _write_all(fd, chunk)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file object whose content becomes ``path``'s, atomically, when the ``with`` block
    ends without an error (nothing changes otherwise), for writers that want a file:
    ``with atomic_file(p) as f: torch.save(obj, f)``. The parent folder must exist."""
    path = check_file_path("path", path)
    with _replacing(path, mode) as fd, os.fdopen(fd, "wb", closefd=False) as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """``data`` as ``path``'s new content, atomically; the parent folder is made if missing.
    ``mode``: the new file's permissions (default: an existing file's, else per the umask)."""
    path = check_file_path("path", path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, [data], mode)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` as UTF-8, atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))
