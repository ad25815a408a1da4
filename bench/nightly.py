"""Benchmark (b): the nightly run end to end, 70 lab laptops + 523 simulated iPads.

Boots a lab (systemd-nspawn laptops + the VPN gateway; needs root) and the lab MDM (real NanoMDM,
the webhook receiver, the iPad simulator) with the example city's 523 iPads, pins the host keys,
then times `compliance.run.run_compliance(..., ("laptops", "ipads"))`: the one-task fact playbook
over the laptops and the MDM query sweep (deadline compliance.query_deadline_s) side by side,
evaluation, waivers and the hash-chained store. Target: under 3 minutes on this 2-core machine.

    .venv/bin/python bench/nightly.py [--laptops 70] [--ipads 523] [--deadline 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class InProcessMDM:
    """NanoMDM (a real process), the webhook receiver (uvicorn in a thread) and the iPad simulator,
    the way the test fixtures start them; used when the lab MDM cannot start."""

    def __init__(self, root: Path, config) -> None:  # type: ignore[no-untyped-def]
        from core.db import Database
        from core.inventory import load_inventory
        from core.secrets import Secret
        from ipad.store import Registry
        from lab.ipad_sim import SimDevice, Simulator
        from lab.mdm import issue_identities, make_scep_ca
        from tests.fixtures_mdm import NanoMDMProcess, start_webhook

        inv = load_inventory(config.inventory_dir)
        d = root / "mdm-bench"
        d.mkdir()
        api_key, hmac_key = "bench-api-key-0123456789", "bench-hmac-key-9876543210"
        (d / "api_key").write_text(api_key)
        ca, ca_key = make_scep_ca(d / "scep")
        self.db = Database(config.database_url)
        registry = Registry(
            self.db, school_of=lambda s: (inv.ipads[s].school, inv.ipads[s].group) if s in inv.ipads else None
        )
        self.webhook = start_webhook(registry, Secret(hmac_key, "bench"))
        self.nanomdm = NanoMDMProcess(d, ca, self.webhook.url, api_key, hmac_key)
        cfg_file = root / "werne.toml"
        cfg_file.write_text(
            cfg_file.read_text() + f'[mdm]\nurl = "{self.nanomdm.url}"\napi_key_file = "{d / "api_key"}"\n',
            encoding="utf-8",
        )
        devices = [
            SimDevice(serial=s, udid=u, cert_pem=pem, key_pem=key)
            for s, u, pem, key in issue_identities(ca, ca_key, sorted(inv.ipads))
        ]
        self.sim = Simulator(self.nanomdm.url, devices, poll_interval=2.0).start()

    def close(self) -> None:
        self.sim.stop()
        self.nanomdm.stop()
        self.webhook.stop()
        self.db.dispose()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--laptops", type=int, default=70)
    ap.add_argument("--ipads", type=int, default=523)
    ap.add_argument("--deadline", type=float, default=60.0)
    ap.add_argument("--keep", action="store_true", help="leave the lab running")
    args = ap.parse_args()
    from compliance.run import run_compliance
    from core.config import LabConfig, apply_endpoints, load_config
    from core.db import Database
    from core.inventory import load_inventory
    from lab import mdm as lab_mdm
    from lab.laptops import Lab

    tmp = Path(tempfile.mkdtemp(prefix="werne-bench-nightly-"))
    lab = Lab(tmp, cache_dir=LabConfig().cache_dir, demo=False, owner_pid=os.getpid())
    try:
        t0 = time.perf_counter()
        hosts = lab.up(laptops=args.laptops, gateway=True)
        print(f"lab: {len(hosts)} hosts up in {time.perf_counter() - t0:.1f} s")
        inv_dir = tmp / "inventory"
        inv_dir.mkdir()
        shutil.copy(lab.inventory_dir / "hosts.yml", inv_dir / "hosts.yml")
        for f in ("schools.yml", "ipads.csv"):
            shutil.copy(REPO / "inventories" / "example-city" / f, inv_dir / f)
        cfg_file = tmp / "werne.toml"
        cfg_file.write_text(
            f'[site]\ninventory = "{inv_dir}"\nstate_dir = "{tmp}"\n'
            f'[compliance]\nquery_deadline_s = {args.deadline}\nluks_missing = "not_applicable"\n',
            encoding="utf-8",
        )
        config = load_config(cfg_file)
        with open(tmp / "known_hosts", "w", encoding="utf-8") as kh:
            subprocess.run(
                ["ssh-keyscan", "-T", "5", "-t", "ed25519", *[h.address for h in hosts]],
                stdout=kh,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        t0 = time.perf_counter()
        world = None
        try:
            lab_mdm.up(tmp, args.ipads, config)
            apply_endpoints(config)  # the lab's NanoMDM, from the endpoints file up() wrote
            how = "lab MDM (separate NanoMDM, webhook and simulator processes)"
        except Exception as e:  # noqa: BLE001 - fall back to the same parts started in this process
            print(
                f"lab MDM did not start ({str(e)[:160]}); starting NanoMDM, the webhook and the simulator here"
            )
            world = InProcessMDM(tmp, config)
            config = load_config(cfg_file)
            how = "NanoMDM process + webhook receiver and simulator in this process"
        print(f"{how}: {args.ipads} simulated iPads started in {time.perf_counter() - t0:.1f} s")
        inv = load_inventory(config.inventory_dir)
        db = Database(config.database_url)
        from ipad.store import Registry

        end = time.monotonic() + 180
        while time.monotonic() < end:
            enrolled = sum(1 for d in Registry(db).list_devices() if d.state == "enrolled")
            if enrolled >= args.ipads - 1:  # the lab keeps one iPad offline on purpose
                break
            time.sleep(2)
        print(f"enrolled: {enrolled} iPads")

        def progress(p):  # type: ignore[no-untyped-def]
            pass

        t0 = time.perf_counter()
        s = run_compliance(config, db, inv, ("laptops", "ipads"), progress=progress)
        wall = time.perf_counter() - t0
        c = s.counts
        load = Path("/proc/loadavg").read_text().split()[0]
        print(
            f"nightly run {s.run_id}: {s.devices} devices ({args.laptops} laptops, {len(inv.ipads)} iPads) "
            f"in {wall:.1f} s (target < 180 s); deadline {args.deadline:g} s; load average {load} on "
            f"{os.cpu_count()} cores"
        )
        print(
            f"  pass {c['pass']}, fail {c['fail']}, error {c['error']}, unreachable {c['unreachable']}, "
            f"waived {c['waived']}, not applicable {c['not_applicable']}"
        )
        db.dispose()
        if world is not None:
            world.close()
    finally:
        if not args.keep:
            try:
                from lab import mdm as lab_mdm

                lab_mdm.down(tmp)
            finally:
                lab.down(purge=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
