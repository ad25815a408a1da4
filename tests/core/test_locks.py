"""core.locks.file_lock: one process at a time, across real processes, and clear errors."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import LockHeldError, StateError
from core.locks import file_lock
from tests.fixtures.site import REPO

HOLDER = """
import sys, time
from pathlib import Path
from core.locks import file_lock
with file_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    print("releasing", flush=True)
"""


def _hold_in_child(path: Path, seconds: float) -> subprocess.Popen:
    repo = REPO
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], cwd=repo, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def _end(child: subprocess.Popen) -> None:
    child.kill()
    child.communicate()


def test_second_process_is_refused_with_a_named_lock(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / "job.lock"
    child = _hold_in_child(lock, 30)
    try:
        with pytest.raises(LockHeldError) as e, file_lock(lock, what="provisioning run"):
            pass
        assert str(e.value) == f"another provisioning run is running (lock {lock})"
    finally:
        _end(child)
    with file_lock(lock):  # a killed holder leaves nothing behind
        assert lock.exists()


def test_waiting_lock_gets_it_when_the_holder_ends(tmp_path: Path) -> None:
    lock = tmp_path / "job.lock"
    child = _hold_in_child(lock, 0.5)
    try:
        t0 = time.monotonic()
        with file_lock(lock, wait=60):
            # Only after the holder let go: it said so before leaving its lock (it may not have exited
            # yet on a loaded machine, so its exit is no sign).
            assert select.select([child.stdout], [], [], 0)[0], "the waiter got the lock while it was held"
            assert child.stdout is not None and child.stdout.readline().strip() == "releasing"
        assert time.monotonic() - t0 < 60
    finally:
        _end(child)


def test_waiting_lock_gives_up_after_its_time(tmp_path: Path) -> None:
    lock = tmp_path / "job.lock"
    child = _hold_in_child(lock, 30)
    try:
        with pytest.raises(LockHeldError, match=r"after 0\.3 s$"), file_lock(lock, wait=0.3):
            pass
    finally:
        _end(child)


def test_custom_errors_and_unusable_dir(tmp_path: Path) -> None:
    class MyHeld(Exception):
        pass

    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(StateError, match=r"^cannot use .*file"), file_lock(blocker / "x.lock"):
        pass
    lock = tmp_path / "l.lock"
    with file_lock(lock), pytest.raises(MyHeld), file_lock(lock, held_error=MyHeld):
        pass  # flock is per open file description: a second open in this process is refused too
