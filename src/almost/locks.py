"""One writer per output directory: a lock file held for as long as the process runs."""

from __future__ import annotations

import atexit
import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

from .contracts import LOCK_NAME
from .errors import AlmostError

_locks: dict[Path, tuple[int, Path, Path | None]] = {}  # resolved dir → (fd, dir, topmost folder we created)


def lock_output_dir(path: str | os.PathLike, command: str) -> None:
    """Hold ``<path>/.almost.lock`` (``flock``) for this process: a second run on the same output
    directory stops with one line naming the holder instead of interleaving its writes.

    The kernel drops the lock when the process dies however it dies, so a crash never leaves the
    directory locked. Creates the directory; if this run then writes nothing (a bad input found
    later), ``release_output_dirs`` removes what it created. Only the main process of a
    multi-process launch (``RANK``/``LOCAL_RANK`` 0) locks: the others write nothing of their own.
    """
    if int(os.environ.get("RANK") or 0) or int(os.environ.get("LOCAL_RANK") or 0):
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AlmostError(f"output directory {path} is an existing file")
    key = path.resolve()
    if key in _locks:
        fd, _, _ = _locks[key]
        try:
            if os.fstat(fd).st_ino == os.stat(key / LOCK_NAME).st_ino:
                return  # already ours (a stage called twice in one process)
        except FileNotFoundError:
            pass
        os.close(fd)  # the folder was emptied under us (the pipeline starts a step again): lock anew
        del _locks[key]
    created = next((p for p in reversed([key, *key.parents]) if not p.exists()), None)
    try:
        key.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AlmostError(f"cannot create output directory {path}: {e.strerror}") from None
    lock_path = key / LOCK_NAME
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise AlmostError(f"{path} is in use by {holder}; wait for it to finish or choose another output directory") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and flock: lock the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} ({command})\n".encode(), 0)
    _locks[key] = (fd, key, created)


def release_output_dirs(keep: Iterable[Path] = ()) -> None:
    """Give up the locks taken since ``keep`` was current; remove folders we created and left empty."""
    keep = set(keep)
    for key in [k for k in _locks if k not in keep]:
        fd, path, created = _locks.pop(key)
        try:
            if os.fstat(fd).st_ino == os.stat(path / LOCK_NAME).st_ino:
                os.unlink(path / LOCK_NAME)  # before closing: nobody can lock a file that is gone
        except FileNotFoundError:
            pass
        os.close(fd)
        if created is not None:
            for folder in [path, *path.parents]:
                try:
                    folder.rmdir()  # only if empty: this run wrote nothing there
                except OSError:
                    break
                if folder == created:
                    break


def held_output_dirs() -> list[Path]:
    return list(_locks)


atexit.register(release_output_dirs)
