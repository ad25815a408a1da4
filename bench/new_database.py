"""Benchmark: create a new SQLite state database (core.db.Database on an empty file) from the schema
snapshot, against the baseline of replaying every Alembic revision (the path before the snapshot,
still the one for PostgreSQL and `werne db upgrade`), alternating in one process.

Run: .venv/bin/python bench/new_database.py [N]. Prints wall and CPU per database (median of N
each) and the ratios. Not part of the test suite.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import core.db  # noqa: E402
from core.db import Database  # noqa: E402


def one(directory: Path, name: str) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    Database(f"sqlite:///{directory / name}").dispose()
    return time.perf_counter() - w, time.process_time() - c


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    snapshot_create = core.db._create_from_snapshot
    runs: dict[str, list[tuple[float, float]]] = {"snapshot": [], "alembic": []}
    with tempfile.TemporaryDirectory() as d:
        one(Path(d), "warm-snapshot.db")  # imports and first-use costs out of the measurement
        core.db._create_from_snapshot = lambda engine, head: False  # type: ignore[assignment]
        one(Path(d), "warm-alembic.db")
        for i in range(n):
            for kind in ("snapshot", "alembic"):
                core.db._create_from_snapshot = snapshot_create if kind == "snapshot" else (  # type: ignore[assignment]
                    lambda engine, head: False)
                runs[kind].append(one(Path(d), f"{kind}-{i}.db"))
    core.db._create_from_snapshot = snapshot_create  # type: ignore[assignment]
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    for k, (w, c) in med.items():
        print(f"{k:9s} wall {w * 1000:7.1f} ms  CPU {c * 1000:7.1f} ms  (median of {n})")
    print(f"snapshot / alembic: wall {med['snapshot'][0] / med['alembic'][0]:.3f}  "
          f"CPU {med['snapshot'][1] / med['alembic'][1]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
