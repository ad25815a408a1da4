"""The README's first command: from nothing to a compliance report on the built-in demo fleet.

Boots the lab (laptops, VPN gateway, NanoMDM with simulated iPads), pins the lab's host keys,
applies the VPN gateway, provisions the laptops with the baseline (which enrols them in the VPN
too), installs the iPads' group profiles, runs the nightly compliance job over both fleets and
writes the HTML report. Every step is the same library call the CLI and the nightly timer make.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compliance.reports import write_report
from compliance.run import FLEETS, run_compliance
from core.config import Config, apply_endpoints
from core.db import Database
from core.inventory import load_inventory
from ipad.actions.configure import configure
from ipad.actions.queries import query
from ipad.dispatch import IPadContext
from lab.laptops import Lab, lab_up
from provisioning.known_hosts import host_id
from provisioning.preflight import known_hosts_path, run_preflight
from provisioning.runner import provision
from provisioning.vpn.ops import gateway_apply

Say = Callable[[str], None]


@dataclass
class DemoResult:
    """What the demo did, step by step, and where the report is."""

    report_path: Path
    run_id: int
    compliance: Any
    steps: list[tuple[str, str]] = field(default_factory=list)


def _demo_wifi_secret(config: Config) -> None:
    """The demo's Wi-Fi profile needs a PSK; make a random one in the state dir (mode 0600)."""
    if config.mdm.wifi_secret_file is not None:
        return
    path = config.state_dir / "demo" / "wifi_psk"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(18) + "\n", encoding="utf-8")
    config.mdm.wifi_secret_file = path


def _pin_lab_host_keys(config: Config, lab: Any, inventory: Any) -> int:
    """Pin every lab host's SSH key from the lab itself, which made them: an out-of-band check,
    stronger than trusting first contact. Replaces older pins for these addresses only (a purged
    lab gets new keys); every other pinned host is kept as it is."""
    path = known_hosts_path(config)
    entries = {}
    for h in [*inventory.laptops.values(), *inventory.gateways.values()]:
        typ, b64 = lab.host_public_key(h.name).split()[:2]
        entries[host_id(h.ansible_host, h.ansible_port)] = f"{typ} {b64}"
    kept = []
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.split(" ", 1)[0] not in entries]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".demo-tmp")
    tmp.write_text("\n".join([*kept, *(f"{hid} {key}" for hid, key in entries.items())]) + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    return len(entries)


def run_demo(config: Config, laptops: int = 3, ipads: int = 12, say: Say = lambda _m: None) -> DemoResult:
    """Run the whole demo; raises the first step's WerneError if a step cannot run at all."""
    steps: list[tuple[str, str]] = []

    def step(name: str, outcome: str) -> None:
        steps.append((name, outcome))
        say(f"[demo] {name}: {outcome}")

    lab = Lab(config.state_dir, cache_dir=config.lab.cache_dir, suite=config.lab.suite)
    say("[demo] booting the lab (the first run builds the Debian base image: 1-2 minutes)")
    up = lab_up(lab, laptops=laptops, gateway=True, ipads=ipads, config=config, progress=say)
    step("lab", f"{len(up.hosts)} hosts up, {ipads} simulated iPads enrolling")
    # The lab wrote its NanoMDM's URL and key file into the state dir's endpoints file.
    apply_endpoints(config)

    # The demo fleet is the lab's: its inventory carries the lab's addresses and controller key.
    config.site.inventory = lab.inventory_dir
    _demo_wifi_secret(config)
    # Lab laptops are containers: they have no disks of their own, so "no LUKS" is not a finding.
    config.compliance.luks_missing = "not_applicable"
    if not Path("/sys/module/wireguard").exists():
        # No kernel WireGuard here: the roles install and use the userspace wireguard-go.
        config.vpn.userspace = True
    inventory = load_inventory(lab.inventory_dir)
    db = Database(config.database_url)
    try:
        pinned = _pin_lab_host_keys(config, lab, inventory)
        step("host keys", f"{pinned} pinned from the lab's own records")
        pre = run_preflight(config, inventory, all_hosts=True, db=db)
        bad = [h for h in pre.hosts if not h.ok]
        step("pre-flight", f"{len(pre.hosts) - len(bad)}/{len(pre.hosts)} hosts ready"
             + "".join(f"; {h.host}: {h.reason}" for h in bad))

        gw = gateway_apply(config, db, inventory)
        step("VPN gateway", f"{gw.gateway} applied with {gw.peers} peer(s)")

        # The baseline includes the WireGuard client role and admits the keys the laptops made
        # (provisioning.runner), so no separate VPN enrolment step follows.
        prov = provision(config, db, inventory, all_hosts=True)
        step("provisioning", ", ".join(f"{h.host} {h.outcome}" for h in prov.hosts))

        ipad_ctx = IPadContext(config, db, inventory)
        # Ask first: configure plans from the newest ProfileList answers, and a restarted lab's
        # simulated iPads start with no profiles, whatever the database remembers from last time.
        query(ipad_ctx, deadline_s=30.0)
        conf = configure(ipad_ctx, max_devices=max(ipads, 1), deadline_s=60.0)
        counts = conf.counts()
        step("iPad profiles", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to change")
        if inventory.appletvs:
            # The classroom Apple TVs enrolled through the same ADE path; the web server set them up
            # (profiles, name from the room); configure makes sure, and waits for their answers.
            tvs = configure(ipad_ctx, kind="appletv", max_devices=len(inventory.appletvs), deadline_s=60.0)
            rooms = ", ".join(f"{t.device_name}" for t in sorted(inventory.appletvs.values(), key=lambda t: t.serial))
            step("Apple TVs", f"{len(inventory.appletvs)} in {rooms}: "
                 + ", ".join(f"{k} {v}" for k, v in sorted(tvs.counts().items())))

        summary = run_compliance(config, db, inventory, FLEETS)
        c = summary.counts
        step("compliance run", f"run {summary.run_id}: {summary.compliant_devices}/{summary.devices} devices "
             f"compliant; pass {c.get('pass', 0)}, fail {c.get('fail', 0)}, "
             f"unreachable {c.get('unreachable', 0)}, waived {c.get('waived', 0)}")
        out = config.state_dir / "reports" / f"compliance-run-{summary.run_id}.html"
        report = write_report(db, summary.run_id, "html", out)
        step("report", str(report))
        return DemoResult(report_path=report, run_id=summary.run_id, compliance=summary, steps=steps)
    finally:
        db.dispose()
