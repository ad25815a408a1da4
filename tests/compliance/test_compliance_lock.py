"""The run lock: one run at a time; a lock left by a dead process is recovered."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from compliance.errors import ComplianceLockHeld
from compliance.lock import RunLock, process_start_ticks


def test_second_holder_is_refused_while_first_holds(tmp_path):
    path = tmp_path / "compliance.lock"
    with RunLock(path):
        with pytest.raises(ComplianceLockHeld) as e:
            RunLock(path).acquire()
        assert e.value.exit_code == 3
        assert f"pid {os.getpid()}" in str(e.value)
    assert not path.exists()
    with RunLock(path) as again:
        assert again.recovered is None


def test_lock_of_live_process_in_another_process_is_held(tmp_path):
    path = tmp_path / "compliance.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        path.write_text(
            json.dumps(
                {
                    "pid": child.pid,
                    "start_ticks": process_start_ticks(child.pid),
                    "host": os.uname().nodename,
                    "since": "x",
                }
            )
        )
        with pytest.raises(ComplianceLockHeld):
            RunLock(path).acquire()
    finally:
        child.stdin.close()
        child.wait()
    # The same pid record is now stale: its process is gone.
    with RunLock(path) as lock:
        assert lock.recovered is not None and lock.recovered["pid"] == child.pid


def test_reused_pid_with_other_start_time_is_stale(tmp_path):
    path = tmp_path / "compliance.lock"
    # Our own pid, but a start time that is not ours: a pid reused after the holder died.
    path.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "start_ticks": (process_start_ticks(os.getpid()) or 0) - 1,
                "host": os.uname().nodename,
                "since": "x",
            }
        )
    )
    with RunLock(path) as lock:
        assert lock.recovered is not None
