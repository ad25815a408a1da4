"""Benchmark (c): the HTML report for 600 devices with 30 days of history.

Builds a state database with 30 nightly runs of 70 laptops and 530 iPads (synthetic facts through
the real engine and history), then times `write_report(..., "html", ...)` for the newest run and
measures its peak Python memory (tracemalloc) and the process's peak RSS.
Target: under 1 s and under 300 MB. Prints the numbers; asserts nothing.

    .venv/bin/python bench/report_html.py [--laptops 70] [--ipads 530] [--days 30]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compliance.reports import write_report  # noqa: E402
from core.config import load_config  # noqa: E402
from core.db import Database  # noqa: E402
from tests.fixtures.compliance import NOW, fleet, ipad_facts, laptop_facts, store_run  # noqa: E402


def build(db: Database, config, laptops: int, ipads: int, days: int) -> int:  # type: ignore[no-untyped-def]
    rnd = random.Random(7)
    run_id = 0
    for day in range(days):
        now = NOW + timedelta(days=day)
        devs = fleet(laptops, ipads, now=now)
        for d in devs:
            if rnd.random() < 0.08:
                d.facts = (
                    laptop_facts(sshd__permitrootlogin="yes")
                    if d.fleet == "laptops"
                    else ipad_facts(security__passcode_present=False)
                )
            elif rnd.random() < 0.03:
                d.reachable, d.reason, d.facts = False, "no answer within 60s", {}
        run_id = store_run(db, config, devs, now=now)
    return run_id


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--laptops", type=int, default=70)
    ap.add_argument("--ipads", type=int, default=530)
    ap.add_argument("--days", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file = Path(tmp) / "werne.toml"
        cfg_file.write_text(f'[site]\nstate_dir = "{tmp}/state"\n', encoding="utf-8")
        config = load_config(cfg_file)
        db = Database(config.database_url)
        t0 = time.perf_counter()
        run_id = build(db, config, args.laptops, args.ipads, args.days)
        print(
            f"setup: {args.days} runs of {args.laptops + args.ipads} devices stored in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        db.dispose()
        db = Database(config.database_url)  # a cold start, as `werne report` has
        out = Path(tmp) / "report.html"
        # Cold: the first report of a fresh process (template compile included). Warm: the next one.
        t0, c0 = time.perf_counter(), time.process_time()
        write_report(db, run_id, "html", out)
        cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        write_report(db, run_id, "html", out)
        warm, warm_cpu = time.perf_counter() - t0, time.process_time() - c0
        tracemalloc.start()
        write_report(db, run_id, "html", out)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size_mb = out.stat().st_size / 1e6
        load = Path("/proc/loadavg").read_text().split()[0]
        print(
            f"html report, {args.laptops + args.ipads} devices, {args.days} runs of history, "
            f"file {size_mb:.1f} MB "
            f"(load average {load} on {os.cpu_count()} cores):"
        )
        print(
            f"  cold {cold:.3f} s wall / {cold_cpu:.3f} s CPU;  warm {warm:.3f} s wall / {warm_cpu:.3f} s CPU"
        )
        print(
            f"  peak Python memory (tracemalloc) {peak / 1e6:.1f} MB; peak RSS of the whole process "
            f"(incl. building the history) {rss_mb:.0f} MB"
        )
        print(
            f"  targets: < 1 s -> {'met' if cold_cpu < 1 else 'MISSED'} (CPU, cold); "
            f"< 300 MB -> {'met' if max(peak / 1e6, rss_mb) < 300 else 'MISSED'}"
        )
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
