"""Benchmark: a full sweep of 523 simulated iPads through a real NanoMDM (target: under 60 s).

Starts the MDM part of a lab in a temporary state dir (lab.mdm.up: NanoMDM with in-memory
storage, the webhook receiver as its own process, the iPad simulator as its own process) with an
inventory of 523 iPads in 12 schools, waits until all have enrolled, then times
`werne ipad query` for all of them: 4 commands each (DeviceInformation, SecurityInfo,
ProfileList, CertificateList) = 2,092 command results, enqueued in bulk, answered by the devices
at their next poll, posted by NanoMDM to the webhook and stored. Prints the wall time and the
ratio against the devices' poll interval (the floor: a device only fetches commands when it polls).

    .venv/bin/python bench/mdm_sweep.py [--ipads 523] [--poll-interval 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.config import apply_endpoints, load_config  # noqa: E402
from core.db import Database  # noqa: E402
from core.inventory import load_inventory  # noqa: E402
from ipad.actions.listing import list_ipads  # noqa: E402
from ipad.actions.queries import query  # noqa: E402
from ipad.dispatch import IPadContext  # noqa: E402
from lab import mdm as lab_mdm  # noqa: E402
from lab.certs import generated_serials  # noqa: E402

SCHOOLS = [f"schule-{i:02d}" for i in range(12)]


def write_inventory(root: Path, n: int) -> None:
    root.mkdir(parents=True)
    shutil.copy(REPO / "inventories" / "demo" / "hosts.yml", root / "hosts.yml")
    schools = "schools:\n" + "".join(
        f'  - id: {s}\n    name: Schule {s}\n    support_phone: "+49 2389 0"\n' for s in SCHOOLS
    )
    (root / "schools.yml").write_text(schools, encoding="utf-8")
    rows = ["serial;model;school;group;name"]
    for i, serial in enumerate(generated_serials(n, start=20000)):
        rows.append(
            f"{serial};iPad (10th generation);{SCHOOLS[i % len(SCHOOLS)]};"
            f"{('pupil', 'pupil', 'teacher', 'shared')[i % 4]};ipad-{i:03d}"
        )
    (root / "ipads.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipads", type=int, default=523)
    ap.add_argument("--poll-interval", type=float, default=5.0)
    ap.add_argument("--deadline", type=float, default=120.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="werne-sweep-"))
    state = tmp / "state"
    write_inventory(tmp / "inventory", args.ipads)
    (tmp / "werne.toml").write_text(
        f'[site]\ninventory = "{tmp / "inventory"}"\nstate_dir = "{state}"\n'
        f"[mdm]\nquery_deadline_s = {args.deadline}\n",
        encoding="utf-8",
    )
    cfg = load_config(tmp / "werne.toml")
    try:
        t0 = time.perf_counter()
        lab_mdm.up(state, args.ipads, cfg, poll_interval=args.poll_interval)
        apply_endpoints(cfg)  # the lab's NanoMDM, from the endpoints file up() wrote
        db = Database(cfg.database_url)
        ctx = IPadContext(cfg, db, load_inventory(cfg.inventory_dir), actor="bench")
        while True:
            rows = list_ipads(ctx)
            enrolled = sum(1 for r in rows if r.state == "enrolled")
            if enrolled >= args.ipads - len(lab_mdm.lab_faults(args.ipads)) // 6 or time.perf_counter() - t0 > 180:
                break
            time.sleep(1)
        print(
            f"lab up, {enrolled}/{args.ipads} iPads enrolled after {time.perf_counter() - t0:.1f} s "
            f"(one is offline on purpose)",
            flush=True,
        )
        t1 = time.perf_counter()
        report = query(ctx, deadline_s=args.deadline)
        wall = time.perf_counter() - t1
        answered = sum(1 for d in report.devices for o in d.outcomes if o.status in ("Acknowledged", "Error"))
        sent = sum(1 for d in report.devices for o in d.outcomes if o.status != "not sent")
        print(
            f"sweep: {len(report.devices)} iPads x 4 queries: {answered}/{sent} results stored "
            f"in {wall:.1f} s (target < 60 s); no answer: {len(report.not_answered)}"
        )
        print(f"ratio to the poll interval ({args.poll_interval:g} s, the floor): {wall / args.poll_interval:.2f}")
        db.dispose()
        return 0 if wall < 60 else 1
    finally:
        lab_mdm.down(state)
        print(f"logs: {state / 'mdm' / 'logs'} (remove {tmp} when done)")


if __name__ == "__main__":
    raise SystemExit(main())
