"""bench/mdm_replicas.py's CPU accounting from /proc: a lab service's CPU is that of its process and
its descendants (nginx's workers, the webhook receiver's worker process, PostgreSQL's backends),
also of those that ended during the measurement. Real processes; no wall-clock assertion: the
children burn a fixed amount of their own CPU time."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.fixtures.site import REPO

BURN_S = 0.3
# Burns BURN_S of CPU in itself, then (with "spawn") in a child it waits for, then sleeps until killed.
BURNER = f"""
import subprocess, sys, time
while time.process_time() < {BURN_S}:
    pass
if sys.argv[1] == "spawn":
    subprocess.run([sys.executable, "-c", "import time\\nwhile time.process_time() < {BURN_S}: pass"], check=True)
print("done", flush=True)
time.sleep(60)
"""


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mdm_replicas_bench", REPO / "bench" / "mdm_replicas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def burner(mode: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", BURNER, mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "done\n"
    return p


def test_a_service_counts_its_live_descendants_and_the_ones_that_ended() -> None:
    b = bench()
    # A parent whose burning child lives on (like nginx's master and its workers) ...
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, "
                               f"'-c', {BURNER!r}, 'idle'])"], stdout=subprocess.PIPE, text=True)
    # ... and one whose burning child ended and was waited for (like a PostgreSQL backend that closed).
    reaped = burner("spawn")
    child = None
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "done\n"
        ppid = b.parents()
        child = next(pid for pid, pp in ppid.items() if pp == parent.pid)
        assert b.tree_cpu_s(parent.pid, ppid) >= BURN_S * 0.9 > b.tree_cpu_s(parent.pid, {})
        assert b.tree_cpu_s(reaped.pid, ppid) >= 2 * BURN_S * 0.9
        assert b.tree_cpu_s(None, ppid) == 0.0
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)
        for p in (parent, reaped):
            p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


def test_the_ratios_and_the_poll_interval() -> None:
    b = bench()
    assert b.poll_interval(593, 60) == 10.0 and b.poll_interval(2000, 60) == 33.0
    assert b.ratio(3.0, 2.0) == "1.50" and b.ratio(1.0, 0.0) == "-"
    assert b.cpu_delta({"nanomdm1": 1.0, "gone": 5.0}, {"nanomdm1": 3.5, "new": 2.0}) == {"nanomdm1": 2.5, "new": 2.0}


def test_the_server_errors_are_counted_from_where_the_run_began(tmp_path: Path) -> None:
    b = bench()
    log = tmp_path / "nginx-access.log"
    before = b'127.0.0.1 - - [07/Dec/2026:02:13:45 +0000] "PUT /mdm HTTP/1.1" 500 22 "-" "MDM/1.0 werne-simulator"\n'
    log.write_bytes(before)
    log.write_bytes(before + b'127.0.0.1 - - [07/Dec/2026:02:13:46 +0000] "PUT /mdm HTTP/1.1" 200 0 "-" "MDM/1.0"\n'
                    b'127.0.0.1 - - [07/Dec/2026:02:13:47 +0000] "PUT /mdm HTTP/1.1" 502 157 "-" "MDM/1.0"\n'
                    b'127.0.0.1 - - [07/Dec/2026:02:13:47 +0000] "GET /v1/push/x HTTP/1.1" 504 0 "-" "werne"\n')
    assert b.server_errors(log, len(before)) == 2
    assert b.server_errors(log, 0) == 3
