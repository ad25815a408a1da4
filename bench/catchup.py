"""Benchmark: the morning catch-up of home-office laptops, and the nightly run through the VPN.

Boots a lab of N laptops and the VPN gateway (needs root), enrols them on the office network, times
the laptops' nightly facts run there (the previous way: office addresses), sends every laptop home
behind its own NAT router, times the same nightly run through the VPN (tunnel addresses), switches
all laptops off, then switches them on at random moments within --spread seconds (the 8 a.m.
rush) while `werne laptop watch` (its library loop, real clock, in a thread) catches them up:
facts collected as evidence, and, with --provision, a queued provisioning run applied.

Reports the wall time from the first laptop switched on until the last is caught up, and the
controller's CPU time (this process and its children: ansible-playbook, ssh) over that window.
The iPads' half of the nightly run (bench/nightly.py) is untouched by the home-office work.

    .venv/bin/python bench/catchup.py [--laptops 70] [--spread 60] [--provision]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--laptops", type=int, default=70)
    ap.add_argument("--spread", type=float, default=60.0, help="switch-ons spread over this many seconds")
    ap.add_argument("--provision", action="store_true", help="also queue and apply a provisioning run")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--jitter", type=float, default=10.0)
    ap.add_argument("--forks", type=int, default=None, help="[provisioning] forks (default: the config's)")
    ap.add_argument("--night", type=float, default=None,
                    help="seconds the laptops stay off before the first switch-on (default: [homeoffice] "
                         "online_window_s + 10, so their last handshakes no longer count as online)")
    ap.add_argument("--steps", action="store_true", help="print every catch-up step with its time")
    args = ap.parse_args()
    from compliance.catchup import make_watcher
    from compliance.evidence import evidence_times
    from compliance.run import run_compliance
    from core.config import LabConfig, load_config
    from core.db import Database
    from core.inventory import load_inventory
    from lab.laptops import Lab
    from provisioning.home.models import KIND_PROVISION
    from provisioning.home.pending import enqueue, list_items
    from provisioning.home.reach import inventory_in_use
    from provisioning.vpn.ops import enrol, gateway_apply
    from tests.fixtures.vpn import pin_lab_host_keys

    tmp = Path(tempfile.mkdtemp(prefix="werne-bench-catchup-"))
    lab = Lab(tmp, cache_dir=LabConfig().cache_dir, demo=False, owner_pid=os.getpid())
    names = [f"lap{i:02d}" for i in range(1, args.laptops + 1)]
    try:
        t0 = time.perf_counter()
        lab.up(laptops=args.laptops, gateway=True)
        print(f"lab: {args.laptops} laptops + gateway up in {time.perf_counter() - t0:.1f} s")
        pin_lab_host_keys(lab, tmp)
        pool = lab.vpn_pool()
        cfg = tmp / "werne.toml"
        cfg.write_text(
            f'[site]\ninventory = "{lab.inventory_dir}"\nstate_dir = "{tmp}"\n'
            f'[vpn]\nuserspace = true\npool_v4 = "{pool}"\ndns = ["{lab.vpn_dns()}"]\n[ssh]\nconnect_timeout = 5\n'
            '[compliance]\nluks_missing = "not_applicable"\napt_lists_missing = "not_applicable"\n'
            f'[homeoffice]\nmanage_from = ["10.200.0.0/16"]\npoll_interval_s = 2\n'
            f"catchup_concurrency = {args.concurrency}\ncatchup_batch = {args.batch}\n"
            f"catchup_jitter_s = {args.jitter}\n"
            # Without a queued run, the watcher collects only evidence older than this: the evidence
            # the nightly run just stored must count as old, or nothing would be caught up.
            + ("" if args.provision else "evidence_refresh_h = 0.001\n")
            + ("" if args.forks is None else f"[provisioning]\nforks = {args.forks}\n"), encoding="utf-8")
        config = load_config(cfg)
        db = Database(config.database_url)
        gateway_apply(config, db, load_inventory(config.inventory_dir))
        t0 = time.perf_counter()
        rep = enrol(config, db, load_inventory(config.inventory_dir), names)
        print(f"enrolled {sum(h.outcome == 'admitted' for h in rep.hosts)} in {time.perf_counter() - t0:.1f} s")

        def nightly(label: str) -> float:
            inv = inventory_in_use(config, db, load_inventory(config.inventory_dir))
            t, c = time.perf_counter(), cpu_s()
            s = run_compliance(config, db, inv, ("laptops",))
            wall = time.perf_counter() - t
            print(f"nightly laptops run ({label}): {s.devices} laptops in {wall:.1f} s wall, "
                  f"{cpu_s() - c:.1f} s controller CPU; unreachable {s.counts['unreachable']}")
            return wall

        office = nightly("office addresses, as before")
        lab.home_office(names)
        lab.route_vpn_pool(pool)
        time.sleep(5)
        home = nightly("home office, through the VPN")
        lab.switch_off(names)
        # The night: a laptop whose last handshake is younger than online_window_s counts as online,
        # so switched on again at once, all 70 would look online before they boot, and the watcher
        # would send its first batches to laptops still off (unreachable, then a 60 s back-off).
        night = config.homeoffice.online_window_s + 10 if args.night is None else args.night
        print(f"night: all off for {night:.0f} s (online_window_s {config.homeoffice.online_window_s})")
        time.sleep(night)
        if args.provision:
            for n in names:
                enqueue(db, n, KIND_PROVISION, "bench", "queued at night")
        w = make_watcher(config, db, lambda: inventory_in_use(config, db, load_inventory(config.inventory_dir)))
        since = {n: evidence_times(db, [n]).get(n) for n in names}
        t_first = [0.0]
        if args.steps:
            w.on_step = lambda st: print(f"  {time.perf_counter() - t_first[0]:7.1f} s  {st.host} {st.action} "
                                         f"{st.outcome} {st.detail[:80]}", flush=True)
        stop = threading.Event()
        thread = threading.Thread(target=w.run, args=(stop,), daemon=True)
        thread.start()
        rng = random.Random(15)
        schedule = sorted((rng.uniform(0, args.spread), n) for n in names)
        start_wall, start_cpu = time.perf_counter(), cpu_s()
        load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        t_first[0] = start_wall
        for at, n in schedule:
            delay = start_wall + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            lab.switch_on([n])
        print(f"switched on {len(names)} laptops within {time.perf_counter() - start_wall:.1f} s")
        deadline = time.perf_counter() + 1800
        while time.perf_counter() < deadline:
            now_times = evidence_times(db, names)
            caught = [n for n in names if now_times.get(n) and now_times[n] != since[n]]
            open_items = list_items(db) if args.provision else []
            if len(caught) == len(names) and not open_items:
                break
            time.sleep(1)
        wall, cpu = time.perf_counter() - start_wall, cpu_s() - start_cpu
        stop.set()
        thread.join(timeout=600)
        steps = [(s.action, s.outcome) for s in w.steps]
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"catch-up: {len(caught)}/{len(names)} laptops caught up {wall:.1f} s after the first switch-on; "
              f"controller CPU {cpu:.1f} s ({cpu / wall:.2f} cores on average); load average {load_before} -> {load} "
              f"on {os.cpu_count()} cores")
        print(f"  steps: {sorted(set((a, o, steps.count((a, o))) for a, o in steps))}")
        print(f"side by side: nightly laptops run {office:.1f} s at the office, {home:.1f} s through the VPN; "
              f"morning catch-up {wall:.1f} s")
        db.dispose()
    finally:
        lab.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
