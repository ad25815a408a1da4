"""The one advisory file lock (flock) that every werne job takes, so each lock behaves the same.

A lock is held for the lifetime of an open file descriptor: a killed process releases it with
its descriptors, so no stale lock is ever left behind by one of these.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import LockHeldError, StateError


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
    """Hold an exclusive flock on `path` (created, parents too) for the `with` block.

    wait: 0 fails at once when another process holds it, None waits as long as it takes, a
    number waits up to that many seconds. Held: `held_error("another <what> is running (lock P)")`.
    The file cannot be created: `unusable_error("cannot use <dir>: <reason>")`.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a")  # noqa: SIM115 - held for the block; "a" never truncates a holder's notes
    except OSError as e:
        raise unusable_error(f"cannot use {path.parent}: {e.strerror}") from None
    with fh:
        if wait is None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        waited = f" after {wait:g} s" if wait else ""
                        raise held_error(f"another {what} is running (lock {path}){waited}") from None
                    time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
