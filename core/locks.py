"""The one advisory file lock (flock) that every werne job takes, so each lock behaves the same.

A lock is held through an open file descriptor: a killed process releases it with its
descriptors, so no stale lock is ever left behind by one of these.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import LockHeldError, StateError


class FileLock:
    """An exclusive flock on `path` (created, parents too), taken and released as often as needed.

    wait: 0 fails at once when another process holds it, None waits as long as it takes, a
    number waits up to that many seconds. Held: `held_error("another <what> is running (lock P)")`.
    The file cannot be created: `unusable_error("cannot use <dir>: <reason>")`. The file is
    opened on first use, so a lock made before a fork is opened by each child on its own.
    """

    def __init__(
        self,
        path: Path,
        *,
        wait: float | None = 0,
        what: str = "this job",
        held_error: Callable[[str], Exception] = LockHeldError,
        unusable_error: Callable[[str], Exception] = StateError,
        poll_s: float = 0.2,
    ):
        self.path = path
        self.wait = wait
        self.what = what
        self.held_error = held_error
        self.unusable_error = unusable_error
        self.poll_s = poll_s
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise self.unusable_error(f"cannot use {self.path.parent}: {e.strerror}") from None
        return self._fd

    def acquire(self) -> None:
        fd = self._open()
        if self.wait is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    waited = f" after {self.wait:g} s" if self.wait else ""
                    raise self.held_error(f"another {self.what} is running (lock {self.path}){waited}") from None
                time.sleep(self.poll_s)

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it, without waiting; whether it was taken."""
        try:
            fcntl.flock(self._open(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


@contextmanager
def file_lock(
    path: Path,
    *,
    wait: float | None = 0,
    what: str = "this job",
    held_error: Callable[[str], Exception] = LockHeldError,
    unusable_error: Callable[[str], Exception] = StateError,
    poll_s: float = 0.2,
) -> Iterator[None]:
    """Hold a FileLock on `path` for the `with` block, then close it (see FileLock for the options)."""
    lock = FileLock(path, wait=wait, what=what, held_error=held_error, unusable_error=unusable_error,
                    poll_s=poll_s)
    try:
        with lock:
            yield
    finally:
        lock.close()
