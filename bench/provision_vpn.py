"""Benchmark: one provisioning run of a home-office laptop through the VPN lab.

Boots a lab of one laptop and the VPN gateway (needs root), enrols the laptop on the office network,
sends it home behind its NAT router (reachable only through its tunnel), then times
`werne laptop provision lap01` (the library call) twice: the first run (package lists refreshed,
as on a new laptop) and a second, converged one. Prints the wall time of each run and of its
slowest tasks (from ansible-runner's job events), so a change in the lab (a resolver on the
gateway, the lab's package source) shows where the time went.

    .venv/bin/python bench/provision_vpn.py [--keep]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


WATCHED = ("Refresh the package lists", "Install pending security updates now")


def slowest_tasks(artifact_dir: str, n: int = 5) -> list[tuple[float, str]]:
    """(seconds, task name) of the slowest task results in one run's job events, and of the
    package-list tasks whatever their time (with the module's message)."""
    out, watched = [], []
    for f in Path(artifact_dir, "job_events").glob("*.json"):
        data = json.loads(f.read_text(encoding="utf-8"))
        ev = data.get("event_data") or {}
        if data.get("event", "").startswith("runner_on_") and ev.get("duration") is not None:
            item = (float(ev["duration"]), str(ev.get("task", "?")))
            out.append(item)
            if item[1] in WATCHED:
                msg = str((ev.get("res") or {}).get("msg") or "")[:100]
                watched.append((item[0], f"{item[1]} [{data['event']}] {msg}"))
    return sorted(out, reverse=True)[:n] + sorted(watched)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", action="store_true", help="leave the lab running (state dir printed)")
    ap.add_argument("--dns", choices=("gateway", "default"), default="gateway",
                    help="[vpn] dns: the lab gateway's tunnel address (the pool's first host), or the "
                         "config's default (10.77.0.1, as the lab tests had it before the lab's resolver)")
    args = ap.parse_args()
    from core.config import LabConfig, load_config
    from core.db import Database
    from core.inventory import load_inventory
    from lab.laptops import Lab
    from provisioning.home.reach import inventory_in_use
    from provisioning.runner import provision
    from provisioning.vpn.ops import enrol, gateway_apply
    from tests.fixtures.vpn import pin_lab_host_keys

    tmp = Path(tempfile.mkdtemp(prefix="werne-bench-provvpn-"))
    lab = Lab(tmp, cache_dir=LabConfig().cache_dir, demo=False, owner_pid=None if args.keep else os.getpid())
    try:
        t0 = time.perf_counter()
        lab.up(laptops=1, gateway=True)
        print(f"lab: 1 laptop + gateway up in {time.perf_counter() - t0:.1f} s")
        pin_lab_host_keys(lab, tmp)
        pool = lab.vpn_pool()
        # The laptops' DNS is the gateway's tunnel address (the pool's first host), as in production.
        dns = str(next(ipaddress.IPv4Network(pool).hosts())) if args.dns == "gateway" else "10.77.0.1"
        cfg = tmp / "werne.toml"
        cfg.write_text(
            f'[site]\ninventory = "{lab.inventory_dir}"\nstate_dir = "{tmp}"\n'
            f'[lab]\ncache_dir = "{lab.cache_dir}"\n'
            f'[vpn]\nuserspace = true\npool_v4 = "{pool}"\ndns = ["{dns}"]\n[ssh]\nconnect_timeout = 5\n'
            f'[homeoffice]\nmanage_from = ["10.200.0.0/16"]\n', encoding="utf-8")
        config = load_config(cfg)
        db = Database(config.database_url)
        try:
            gateway_apply(config, db, load_inventory(config.inventory_dir))
            report = enrol(config, db, load_inventory(config.inventory_dir), ["lap01"])
            assert {h.outcome for h in report.hosts} == {"admitted"}, report
            lab.home_office(["lap01"])
            lab.route_vpn_pool(pool)
            inv = inventory_in_use(config, db, load_inventory(config.inventory_dir))
            print(f"lap01 at home, reached at {inv.laptops['lap01'].ansible_host} through the tunnel; dns {dns}")
            # As on a laptop whose package lists were never refreshed (a base image younger than the
            # baseline's cache_valid_time would otherwise skip the refresh this bench is about).
            lab.exec("lap01", ["sh", "-c", "rm -f /var/lib/apt/periodic/update-success-stamp; "
                               "touch -d @0 /var/lib/apt/lists"])
            for label in ("first run", "second run (converged)"):
                load = os.getloadavg()
                t = time.perf_counter()
                r = provision(config, db, inv, ["lap01"])
                wall = time.perf_counter() - t
                outcomes = ", ".join(f"{h.host} {h.outcome}" for h in r.hosts)
                print(f"{label}: {wall:.1f} s ({outcomes}; load before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
                for secs, task in slowest_tasks(r.artifact_dir):
                    print(f"    {secs:6.1f} s  {task}")
        finally:
            db.dispose()
    finally:
        if args.keep:
            print(f"lab kept in {tmp}; `werne --state-dir {tmp} lab down --purge` removes it")
        else:
            lab.down(purge=True)
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
