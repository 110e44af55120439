"""Atomic file writes: a crash mid-write leaves the previous file intact.

Every file fastloop writes (``Learner.save``, checkpoints, ``SaveModelCallback``, CSV logs) goes
through here: the bytes go to a temporary file in the *same folder* (so the final rename never
crosses a filesystem), are flushed and fsync'ed, and only then ``os.replace`` swaps the new file in.
``os.replace`` is atomic on POSIX and Windows: a reader sees the old file or the new one, never half
of either.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_open", "atomic_save", "atomic_write_bytes", "atomic_write_text"]


def _default_mode() -> int:
    "The permissions a plain open() would give a new file (mkstemp's are 0o600)."
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_NEW_FILE_MODE = _default_mode()


def _fsync_dir(folder: Path) -> None:
    "Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to `path` for writing; on a clean exit, fsync it and replace `path`.

    If the block raises, the temporary file is removed and `path` is left exactly as it was.
    """
    if not any(c in mode for c in "wx") or "+" in mode:
        raise ValueError(f"atomic_open writes a whole new file: use mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        # keep the permissions of the file we replace, or those a plain open() would give a new one
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else _NEW_FILE_MODE)
        with os.fdopen(fd, mode.replace("x", "w"), **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # the only moment `path` changes
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    "Write `data` to `path` atomically."
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    "Write `text` to `path` atomically."
    with atomic_open(path, "w", encoding=encoding, newline="") as f:
        f.write(text)


def atomic_save(obj: Any, target: Any) -> None:
    """``torch.save(obj, target)``, atomically when `target` is a path.

    A file-like `target` (an ``io.BytesIO`` buffer...) is written directly: there is no file to replace.
    """
    if isinstance(target, (str, os.PathLike)):
        buf = io.BytesIO()
        torch.save(obj, buf)  # serialise fully first: a pickling error never touches the disk
        atomic_write_bytes(target, buf.getvalue())
    else:
        torch.save(obj, target)
