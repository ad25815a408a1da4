"""Benchmark: `werne apps apply` for the example city (523 iPads, five schools, two Apps and Books
locations) against the fake Apps and Books service (tests/fakes/fake_appsbooks.py, real HTTP on loopback)
and a real NanoMDM (in-memory storage; the 523 iPads enrolled in it by lab/ipad_sim.py's simulated
devices, so each InstallApplication is really enqueued; the registry rows are written directly,
without the webhook receiver, and the deadline is 0: nobody waits for the installs).

Baseline: the same licences assigned one associate call per device (every app of its group in
that call) plus the status polls of each event, the way a per-device loop would do it, against a
fresh fake with the same licences. Printed side by side: wall time and Apps and Books API calls.

    .venv/bin/python bench/apps_apply.py [--pending-polls 1]
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

import requests  # noqa: E402

from core.config import load_config  # noqa: E402
from core.db import Database  # noqa: E402
from core.inventory import load_inventory  # noqa: E402
from core.models import utcnow  # noqa: E402
from core.secrets import Secret  # noqa: E402
from ipad.apps.catalogue import load_apps  # noqa: E402
from ipad.apps.licences import apply  # noqa: E402
from ipad.dispatch import IPadContext  # noqa: E402
from ipad.models import MDMCommand, MDMDevice  # noqa: E402
from lab.certs import make_scep_ca  # noqa: E402
from lab.mdm import NANOMDM_BIN, nanomdm_argv  # noqa: E402
from lab.processes import free_port  # noqa: E402
from mdm_client.appsbooks import AppsBooksClient  # noqa: E402
from tests.fakes.fake_appsbooks import FakeAppsBooks  # noqa: E402

CITY = REPO / "inventories" / "example-city"
API_KEY = "bench-api-key-0123456789"


def city_licences(inventory: Path) -> dict[str, dict[str, int]]:
    inv, cat = load_inventory(inventory), load_apps()
    out: dict[str, dict[str, int]] = {}
    for ipad in inv.ipads.values():
        loc = inv.schools[ipad.school].apps_location
        for app in cat.apps_for(ipad.group):
            out.setdefault(loc, {}).setdefault(app.adam_id, 10)
            out[loc][app.adam_id] += 1
    return out


def start_nanomdm(root: Path, ca: Path) -> tuple[subprocess.Popen[bytes], str]:
    if not NANOMDM_BIN.exists():
        sys.exit(f"NanoMDM is not at {NANOMDM_BIN}: run scripts/setup.sh")
    port = free_port()
    log = open(root / "nanomdm.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(nanomdm_argv(f"127.0.0.1:{port}", ca, None, None), stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "NANOMDM_API": API_KEY})
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            if requests.get(url + "/version", timeout=1).ok:
                return proc, url
        except requests.RequestException:
            time.sleep(0.05)
    proc.terminate()
    sys.exit("NanoMDM did not start")


def per_device_baseline(licences: dict[str, dict[str, int]], inventory: Path, pending_polls: int
                        ) -> tuple[float, int, int]:
    """One associate call per device, then its event's status until done: (seconds, calls, licences)."""
    inv, cat = load_inventory(inventory), load_apps()
    with FakeAppsBooks(page_size=500, pending_polls=pending_polls) as fake:
        clients = {loc: AppsBooksClient(fake.url, Secret(fake.add_location(loc, apps), "bench"), loc, timeout=10)
                   for loc, apps in licences.items()}
        t = time.perf_counter()
        assigned = 0
        for ipad in sorted(inv.ipads.values(), key=lambda i: i.serial):
            client = clients[inv.schools[ipad.school].apps_location]
            apps = [(a.adam_id, a.pricing_param) for a in cat.apps_for(ipad.group)]
            event = client.associate(apps, [ipad.serial])
            st = client.wait_for_events([event], 30, 0.0)[event]
            assert st.status == "COMPLETE", st
            assigned += len(apps)
        seconds = time.perf_counter() - t
        return seconds, sum(c.calls for c in clients.values()), assigned


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pending-polls", type=int, default=1, help="status polls each fake event stays PENDING")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="werne-bench-apps-") as tmp:
        root = Path(tmp)
        inventory = root / "inventory"
        shutil.copytree(CITY, inventory)
        licences = city_licences(inventory)
        ca, ca_key = make_scep_ca(root / "scep")
        proc, mdm_url = start_nanomdm(root, ca)
        inv = load_inventory(inventory)
        udid_of: dict[str, str] = {}
        sim = None
        try:
            from lab.certs import issue_identities
            from lab.ipad_sim import SimDevice, Simulator

            devices = []
            for serial, udid, pem, key in issue_identities(ca, ca_key, sorted(inv.ipads)):
                udid_of[serial] = udid
                devices.append(SimDevice(serial=serial, udid=udid, cert_pem=pem, key_pem=key))
            t0 = time.perf_counter()
            sim = Simulator(mdm_url, devices, poll_interval=600).start()
            if not sim.wait_enrolled(120):
                sys.exit("the simulated iPads did not enrol in NanoMDM")
            print(f"({len(devices)} simulated iPads enrolled in NanoMDM in {time.perf_counter() - t0:.1f} s)")
            with FakeAppsBooks(page_size=500, pending_polls=args.pending_polls) as fake:
                lines = [f'[site]\ninventory = "{inventory}"\nstate_dir = "{root / "state"}"\n',
                         f'[mdm]\nurl = "{mdm_url}"\napi_key_file = "{root / "api_key"}"\n',
                         f'[apps]\nurl = "{fake.url}"\nevent_poll_s = 0.05\n']
                (root / "api_key").write_text(API_KEY)
                for loc, apps in licences.items():
                    (root / f"{loc}.vpptoken").write_text(fake.add_location(loc, apps))
                    lines.append(f'[apps.locations.{loc}]\ntoken_file = "{root / (loc + ".vpptoken")}"\n')
                (root / "werne.toml").write_text("".join(lines))
                cfg = load_config(root / "werne.toml")
                db = Database(cfg.database_url)
                now = utcnow()
                with db.session() as s:
                    s.add_all(MDMDevice(enrollment_id=udid_of[i.serial], udid=udid_of[i.serial], serial=i.serial,
                                        school=i.school, group=i.group, state="enrolled", enrolled_at=now,
                                        last_seen_at=now, token_update_tally=1) for i in inv.ipads.values())
                ctx = IPadContext(cfg, db, inv, actor="bench")
                t = time.perf_counter()
                report = apply(ctx, max_devices=len(inv.ipads), deadline_s=0.0)
                batched_s = time.perf_counter() - t
                assert report.failed == [], [d.lines for d in report.devices if not d.ok][:2]
                with db.session() as s:
                    queued = s.query(MDMCommand).filter(MDMCommand.request_type == "InstallApplication",
                                                        MDMCommand.status == "queued").count()
                licences_assigned = sum(len(ss) for loc in fake.locations.values() for ss in [loc.assignments])
                db.dispose()
        finally:
            if sim is not None:
                sim.stop()
            proc.terminate()
            proc.wait(10)
        base_s, base_calls, base_assigned = per_device_baseline(licences, inventory, args.pending_polls)
    assert base_assigned == licences_assigned
    print(f"example city: {len(inv.ipads)} iPads, {licences_assigned} licences, "
          f"{queued} InstallApplication commands enqueued in NanoMDM")
    print(f"{'':28} {'wall time':>10} {'API calls':>10}")
    print(f"{'werne apps apply (batched)':28} {batched_s:9.2f}s {report.api_calls:10d}   "
          f"({report.licence_calls} associate calls; time includes the NanoMDM enqueues)")
    print(f"{'one call per device':28} {base_s:9.2f}s {base_calls:10d}   (licences only, no MDM commands)")
    print(f"ratio: {base_calls / report.api_calls:.1f}x fewer API calls, {base_s / batched_s:.1f}x less wall time")


if __name__ == "__main__":
    main()
