"""Benchmark: the nightly iPad collection on the example city's 523 simulated iPads, query-only sweep
against the sweep with declarative status, side by side in one run.

Starts a real NanoMDM (-dm to KMFDDM), a real KMFDDM (-enqueue to NanoMDM), the webhook receiver and
the simulator (every iPad enrolled with an identity from the SCEP CA), puts the group sets into
KMFDDM and maps every iPad (`werne ipad declarations apply`'s code), waits until every iPad has
synchronised and sent its status report, then times:
  A  the query-only sweep (DeviceInformation, SecurityInfo, ProfileList, CertificateList per iPad)
  B  the nightly with DDM status: status read from KMFDDM, then ProfileList, Restrictions and
     CertificateList only (DeviceInformation/SecurityInfo for iPads without fresh status)
and prints the commands each sent and its wall time.

    .venv/bin/python bench/nightly_ddm.py [--ipads 523] [--deadline 120]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ipads", type=int, default=523)
    p.add_argument("--deadline", type=float, default=120.0)
    p.add_argument("--poll-interval", type=float, default=5.0)
    args = p.parse_args()

    from sqlalchemy import select

    from compliance.collect_ipads import collect_ipads, mdm_ddm_sweep, mdm_query_sweep
    from core.config import load_config
    from core.db import Database
    from core.inventory import load_inventory
    from core.secrets import Secret
    from ipad.ddm.group_sets import apply_group_sets
    from ipad.dispatch import IPadContext
    from ipad.models import MDMCommand
    from ipad.store.registry import Registry
    from lab import kmfddm as lab_kmfddm
    from lab import processes
    from lab.certs import issue_identities, make_scep_ca
    from lab.ipad_sim import SimDevice, Simulator
    from lab.mdm import nanomdm_argv
    from lab.processes import HTTPReady, Service, free_port
    from tests.fixtures.mdm import start_webhook

    root = Path(tempfile.mkdtemp(prefix="werne-bench-ddm-"))
    state = root / "state"
    state.mkdir()
    inv_dir = root / "inventory"
    shutil.copytree(REPO / "inventories" / "example-city", inv_dir)
    lines = (inv_dir / "ipads.csv").read_text(encoding="utf-8").splitlines()
    (inv_dir / "ipads.csv").write_text("\n".join(lines[: args.ipads + 1]) + "\n", encoding="utf-8")
    inventory = load_inventory(inv_dir)
    api_key, hmac_key, ddm_key = "bench-api-key-0123456789", "bench-hmac-key-9876543210", "bench-kmfddm-key"
    for name, value in (("api_key", api_key), ("ddm_key", ddm_key)):
        (root / name).write_text(value + "\n")
        (root / name).chmod(0o600)
    ca, ca_key = make_scep_ca(root / "scep")
    db = Database(f"sqlite:///{state / 'werne.db'}")
    registry = Registry(db, school_of=lambda s: (inventory.ipads[s].school, inventory.ipads[s].group)
                        if s in inventory.ipads else None)
    webhook = start_webhook(registry, Secret(hmac_key, "bench"))
    port = free_port()
    nano_url = f"http://127.0.0.1:{port}"
    sim = None
    try:
        ddm = lab_kmfddm.up(state, Secret(ddm_key, "bench"), enqueue_url=nano_url + "/v1/enqueue/",
                            enqueue_key=Secret(api_key, "bench"))
        processes.up(Service(
            name="nanomdm", what="NanoMDM", directory=root, ready=HTTPReady(nano_url + "/version"),
            argv=tuple(nanomdm_argv(f"127.0.0.1:{port}", ca, webhook.url, dm_url=ddm.url + "/")),
            env={"NANOMDM_API": api_key, "NANOMDM_WEBHOOK_HMAC_KEY": hmac_key}))
        cfg_file = root / "werne.toml"
        cfg_file.write_text(
            f'[site]\ninventory = "{inv_dir}"\nstate_dir = "{state}"\n'
            f'[mdm]\nurl = "{nano_url}"\napi_key_file = "{root / "api_key"}"\nblast_radius = 1000\n'
            f'[ddm]\nurl = "{ddm.url}"\napi_key_file = "{root / "ddm_key"}"\n'
            f'[compliance]\nquery_deadline_s = {args.deadline}\n', encoding="utf-8")
        cfg = load_config(cfg_file)
        devices = [SimDevice(serial=s, udid=u, cert_pem=pem, key_pem=key)
                   for s, u, pem, key in issue_identities(ca, ca_key, sorted(inventory.ipads))]
        sim = Simulator(nano_url, devices, poll_interval=args.poll_interval).start()
        t0 = time.monotonic()
        if not sim.wait_enrolled(300):
            print("not every iPad enrolled", file=sys.stderr)
            return 1
        while sum(1 for d in registry.devices_by_serial().values() if d.state == "enrolled") < len(devices):
            time.sleep(0.5)
        print(f"{len(devices)} iPads enrolled in {time.monotonic() - t0:.1f} s")
        ctx = IPadContext(cfg, db, inventory, actor="bench")
        t0 = time.monotonic()
        apply_group_sets(ctx, max_devices=10_000)
        t_apply = time.monotonic() - t0
        end = time.monotonic() + 300
        while time.monotonic() < end and not all(d.ddm.reports_sent for d in devices):
            sim.wake()
            time.sleep(1)
        print(f"group sets applied in {t_apply:.1f} s; {sum(1 for d in devices if d.ddm.reports_sent)} iPads "
              f"reported DDM status after {time.monotonic() - t0:.1f} s "
              f"({sum(d.ddm.fetches for d in devices)} DM check-ins)")

        def commands_since(known: set[str]) -> Counter:
            with db.session() as s:
                return Counter(r.request_type for r in s.scalars(select(MDMCommand)) if r.command_uuid not in known)

        def uuids() -> set[str]:
            with db.session() as s:
                return {r.command_uuid for r in s.scalars(select(MDMCommand))}

        results = {}
        for label, make in (("A query-only", lambda: mdm_query_sweep(cfg, db, inventory)),
                            ("B with DDM status", lambda: mdm_ddm_sweep(cfg, db, inventory))):
            before = uuids()
            t0 = time.monotonic()
            facts = collect_ipads(cfg, inventory, db, sweep=make())
            wall = time.monotonic() - t0
            sent = commands_since(before)
            answered = sum(1 for f in facts if f.reachable)
            results[label] = (wall, sent, answered)
        print(f"\n{'sweep':<20} {'wall s':>8} {'commands':>9} {'per iPad':>9} {'answered':>9}  by type")
        for label, (wall, sent, answered) in results.items():
            total = sum(sent.values())
            print(f"{label:<20} {wall:8.1f} {total:9d} {total / len(devices):9.2f} {answered:9d}  "
                  + ", ".join(f"{k} {v}" for k, v in sorted(sent.items())))
        return 0
    finally:
        if sim is not None:
            sim.stop()
        processes.stop("nanomdm", root)
        lab_kmfddm.down(state)
        webhook.stop()
        db.dispose()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
