"""Benchmark: enrolment request intake and the arrival sweep on a real SQLite state database.

1. Intake: `create_request` for one Apple School Manager CSV export with N serials (validation of
   every serial, duplicate checks against the inventory and open requests, one transaction).
   Baseline: parsing the same CSV alone (`parse_uploaded_serials`); the ratio is the cost of the
   checks and the insert.
2. Sweep: one `process_arrivals` round over M approved requests of 25 serials each that have not
   enrolled yet (what `werne web serve` runs every 5 s while iPads are on their way).
   Baseline: the same round with no open requests.

    .venv/bin/python bench/enrol_requests.py [--serials 2000] [--requests 80]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.config import load_config  # noqa: E402
from core.db import Database  # noqa: E402
from core.inventory import load_inventory  # noqa: E402
from enrolment import requests as reqs  # noqa: E402
from enrolment.accounts import Principal  # noqa: E402
from enrolment.arrival import process_arrivals  # noqa: E402
from enrolment.models import EnrolmentRequest, RequestSerial  # noqa: E402


def timed(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serials", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=80)
    args = ap.parse_args()
    inv = load_inventory(REPO / "inventories" / "demo")
    coord = Principal("bench", "coordinator", frozenset({"gs-demo"}))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(state_dir=tmp)

        def asm_csv(run: int) -> bytes:
            rows = "".join(f"BENCH{run:02d}{i:05d};iPad\r\n" for i in range(args.serials))
            return ("\ufeffSerial Number;Device Model\r\n" + rows).encode()

        raw = asm_csv(0)
        parse = timed(lambda: reqs.parse_uploaded_serials(raw, "asm.csv", "gs-demo"))
        db = Database(cfg.database_url)  # migrated here, outside the timing
        runs = iter(range(1, 100))

        def intake() -> None:
            upload = asm_csv(next(runs))
            reqs.create_request(
                db, inv, coord, "gs-demo", "pupil", "bench", upload=upload, upload_name="asm.csv"
            )

        create = timed(intake)
        print(
            f"intake of {args.serials} serials: parse {parse * 1000:.1f} ms, create_request "
            f"{create * 1000:.1f} ms, ratio {create / parse:.1f}x"
        )
        with db.session() as s:  # the sweep below starts from no open requests
            s.query(RequestSerial).delete()
            s.query(EnrolmentRequest).delete()

        empty = timed(lambda: process_arrivals(db, cfg))
        with db.session() as s:
            for r in range(args.requests):
                req = EnrolmentRequest(
                    school_id="gs-demo",
                    device_group="pupil",
                    purpose=f"b{r}",
                    status="assigned",
                    created_by="bench",
                )
                req.serials = [
                    RequestSerial(serial=f"SWEEP{r:03d}{i:04d}", status="assigned", pending_commands=[])
                    for i in range(25)
                ]
                s.add(req)
        full = timed(lambda: process_arrivals(db, cfg))
        print(
            f"arrival sweep: no open requests {empty * 1000:.1f} ms, {args.requests * 25} serials waiting "
            f"{full * 1000:.1f} ms, ratio {full / empty:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
