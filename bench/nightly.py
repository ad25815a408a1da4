"""Benchmark (b): the nightly run end to end, 70 lab laptops + 523 simulated iPads, at the office
(the previous setup) and in the home office (the same laptops through the VPN), side by side.

Boots a lab (systemd-nspawn laptops + the VPN gateway; needs root), pins the host keys, applies the
gateway and enrols every laptop on the office network, and starts the lab MDM (real NanoMDM behind
nginx, the webhook receiver, the iPad simulator) with the example city's iPads. Then times
`compliance.run.run_compliance(..., ("laptops", "ipads"))` (the one-task fact playbook over the
laptops and the MDM query sweep side by side, evaluation, waivers, the hash-chained store):

  (a) previous setup: every laptop at its office address;
  (b) home office: every laptop sent home behind its own NAT router (lab home-office mode) and
      reached at its tunnel address (provisioning.home.reach.inventory_in_use), as catchup.py does;
  (c) home office with --off of the laptops switched off (default 6 of 10): their stored evidence
      from (b) is used, they are not counted unreachable.

An unmeasured warm-up run comes first, and each timed run waits --settle seconds (moving 70 laptops
home reboots them, which loads the 2 cores for a while).

Prints the wall time and controller CPU (this process and its children: ansible-playbook, ssh) of
each run, when each fleet's collection ended, the ratios against (a), and the 60 s target. The
iPads' sweep waits until every enrolled iPad answered or compliance.query_deadline_s passed
(--deadline): one enrolled iPad that stays silent holds the run that long. The lab's offline iPad
(--no-faults: none) never enrolled, so it is "never seen" and not waited for.

    .venv/bin/python bench/nightly.py [--laptops 70] [--ipads 523] [--deadline 60] [--off 0.6]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_S = 60.0


def cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Figure:
    label: str
    wall: float
    cpu: float
    laptops_done: float | None
    ipads_done: float | None
    counts: dict[str, int]
    devices: int
    load_before: str
    load_after: str


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--laptops", type=int, default=70)
    ap.add_argument("--ipads", type=int, default=523)
    ap.add_argument("--deadline", type=float, default=60.0, help="compliance.query_deadline_s")
    ap.add_argument("--off", type=float, default=0.6, help="share of laptops switched off for (c); 0: skip (c)")
    ap.add_argument("--no-faults", action="store_true", help="no faulty iPads (none offline)")
    ap.add_argument("--settle", type=float, default=30.0,
                    help="seconds of rest before each timed run (the laptops' boot after a move loads the machine)")
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    args = ap.parse_args()
    from compliance.run import run_compliance
    from core.config import LabConfig, apply_endpoints, load_config
    from core.db import Database
    from core.inventory import load_inventory
    from ipad.store import Registry
    from lab import mdm as lab_mdm
    from lab.laptops import Lab
    from provisioning.home.reach import inventory_in_use
    from provisioning.vpn.ops import enrol, gateway_apply
    from tests.fixtures_vpn import pin_lab_host_keys

    tmp = Path(tempfile.mkdtemp(prefix="werne-bench-nightly-"))
    lab = Lab(tmp, cache_dir=LabConfig().cache_dir, demo=False, owner_pid=os.getpid())
    names = [f"lap{i:02d}" for i in range(1, args.laptops + 1)]
    inv_dir = tmp / "inventory"

    def sync_inventory() -> None:
        # The lab's hosts.yml (home_office marks included) with the example city's schools and iPads.
        shutil.copy(lab.inventory_dir / "hosts.yml", inv_dir / "hosts.yml")

    try:
        t0 = time.perf_counter()
        lab.up(laptops=args.laptops, gateway=True)
        print(f"lab: {args.laptops} laptops + gateway up in {time.perf_counter() - t0:.1f} s")
        pin_lab_host_keys(lab, tmp)
        inv_dir.mkdir()
        sync_inventory()
        for f in ("schools.yml", "ipads.csv"):
            shutil.copy(REPO / "inventories" / "example-city" / f, inv_dir / f)
        pool = lab.vpn_pool()
        cfg_file = tmp / "werne.toml"
        cfg_file.write_text(
            f'[site]\ninventory = "{inv_dir}"\nstate_dir = "{tmp}"\n'
            f'[vpn]\nuserspace = true\npool_v4 = "{pool}"\n[ssh]\nconnect_timeout = 5\n'
            f'[compliance]\nquery_deadline_s = {args.deadline}\nluks_missing = "not_applicable"\n'
            'apt_lists_missing = "not_applicable"\n'
            '[homeoffice]\nmanage_from = ["10.200.0.0/16"]\n',
            encoding="utf-8",
        )
        config = load_config(cfg_file)
        db = Database(config.database_url)
        gateway_apply(config, db, load_inventory(config.inventory_dir))
        t0 = time.perf_counter()
        rep = enrol(config, db, load_inventory(config.inventory_dir), names)
        print(f"VPN: enrolled {sum(h.outcome == 'admitted' for h in rep.hosts)} in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        lab_mdm.up(tmp, args.ipads, config, faults=not args.no_faults)
        apply_endpoints(config)  # the lab's NanoMDM, from the endpoints file up() wrote
        print(f"lab MDM: {args.ipads} simulated iPads started in {time.perf_counter() - t0:.1f} s")
        end = time.monotonic() + 300
        enrolled = 0
        while time.monotonic() < end:
            enrolled = sum(1 for d in Registry(db).list_devices() if d.state == "enrolled")
            if enrolled >= args.ipads - (0 if args.no_faults else 1):  # the lab keeps one iPad offline
                break
            time.sleep(2)
        print(f"enrolled: {enrolled} iPads after {time.perf_counter() - t0:.1f} s")

        def nightly(label: str) -> Figure:
            time.sleep(args.settle)
            inv = inventory_in_use(config, db, load_inventory(config.inventory_dir))
            t, c, before = time.perf_counter(), cpu_s(), loadavg()
            done: dict[str, float] = {}

            def progress(p):  # type: ignore[no-untyped-def]
                if p.fleet == "laptops" and p.done >= p.total:
                    done.setdefault("laptops", time.perf_counter() - t)
                elif p.fleet == "ipads" and p.message == "sweep done":
                    done.setdefault("ipads", time.perf_counter() - t)

            s = run_compliance(config, db, inv, ("laptops", "ipads"), progress=progress)
            f = Figure(label, time.perf_counter() - t, cpu_s() - c, done.get("laptops"), done.get("ipads"),
                       dict(s.counts), s.devices, before, loadavg())
            c = f.counts
            print(f"nightly run {s.run_id} ({label}): {s.devices} devices in {f.wall:.1f} s wall, {f.cpu:.1f} s "
                  f"controller CPU; laptops collected at {f.laptops_done or 0:.1f} s, iPad sweep done at "
                  f"{f.ipads_done or 0:.1f} s; load average {f.load_before} -> {f.load_after}")
            lc = (s.fleets.get("laptops") or {}).get("counts", {})
            print(f"  rule results: pass {c.get('pass', 0)}, fail {c.get('fail', 0)}, error {c.get('error', 0)}, "
                  f"unreachable {c.get('unreachable', 0)}, waived {c.get('waived', 0)}, "
                  f"not applicable {c.get('not_applicable', 0)}; laptops' unreachable {lc.get('unreachable', 0)}")
            return f

        # Unmeasured: the first sweep meets the lab's NotNow streak and cold caches; (a) must not pay for them.
        nightly("warm-up, not compared")
        figures = [nightly("(a) previous setup: laptops at the office")]
        lab.home_office(names)
        sync_inventory()
        lab.route_vpn_pool(pool)
        figures.append(nightly("(b) home office: laptops through the VPN"))
        if args.off > 0:
            off = names[: round(len(names) * args.off)]
            lab.switch_off(off)
            figures.append(nightly(f"(c) home office, {len(off)} of {len(names)} laptops off: their evidence"))

        base = figures[0]
        print()
        print(f"nightly run, {args.laptops} laptops + {args.ipads} iPads (sweep deadline {args.deadline:g} s), "
              f"{os.cpu_count()} cores; target {TARGET_S:g} s")
        print(f"  {'run':<62} {'wall s':>7} {'x (a)':>6} {'CPU s':>6} {'laptops s':>9} {'iPads s':>8} "
              f"{'target':>7}  load avg before -> after")
        for f in figures:
            print(f"  {f.label:<62} {f.wall:7.1f} {f.wall / base.wall:6.2f} {f.cpu:6.1f} "
                  f"{f.laptops_done or 0:9.1f} {f.ipads_done or 0:8.1f} "
                  f"{'met' if f.wall <= TARGET_S else 'MISSED':>7}  {f.load_before} -> {f.load_after}")
        db.dispose()
    finally:
        if not args.keep:
            try:
                lab_mdm.down(tmp)
            finally:
                lab.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
