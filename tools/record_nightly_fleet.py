#!/usr/bin/env python3
"""Record a small fleet's nightly inputs for tests/compliance/test_nightly_same_results.py.

Usage: tools/record_nightly_fleet.py LAB_STATE_DIR [OUTPUT] [--laptops lap01,...] [--off lap06]
    LAB_STATE_DIR: a running lab of laptops with its gateway (lab.laptops.Lab, host keys pinned in
    LAB_STATE_DIR/known_hosts, config LAB_STATE_DIR/werne.toml); OUTPUT defaults to
    tests/compliance/data/nightly_fleet.json.

What the nightly reads, at the two places it reads it from the outside:
- the laptops: what `compliance.collect_laptops.run_facts_playbook` returned for the named lab
  laptops and the gateway (really collected by the facts playbook over SSH), with --off laptops
  switched off first (so they are really unreachable), and their inventory lines;
- the iPads: for the first 12 (IPADS) iPads of inventories/example-city, with the lab's faults on the
  last of them (lab.mdm.lab_faults), what the simulated iPads (lab.ipad_sim) answer to the nightly's
  queries, kept as the registry keeps them (ipad.store.facts.fact_value of the answer without its
  envelope), i.e. what the sweep hands to compliance.collect_ipads. The other iPads of the
  inventory are never enrolled.
The run's clock is fixed (NOW) so that ages in the evidence are the same on every replay.
Derived from the lab and the simulator of this repository; no outside data.
"""

from __future__ import annotations

import argparse
import json
import plistlib
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NOW = "2026-12-07T01:30:00+00:00"
IPADS = 12


def ipad_answers() -> list[dict[str, Any]]:
    """The simulated iPads' answers to the nightly queries, as the registry stores them."""
    from core.inventory import load_inventory
    from ipad import commands
    from ipad.results import REPORT_ENVELOPE
    from ipad.store.events import ParsedEvent
    from ipad.store.facts import fact_value
    from lab.certs import issue_identities, make_ca
    from lab.ipad_sim import DeviceFaults, SimDevice
    from lab.mdm import lab_faults

    serials = sorted(load_inventory(REPO / "inventories" / "example-city").ipads)[:IPADS]
    plan = lab_faults(IPADS)
    queries = [commands.device_information(), commands.security_info(), commands.profile_list(),
               commands.restrictions(), commands.certificate_list()]
    out = []
    with tempfile.TemporaryDirectory() as d:
        ca, key = make_ca(Path(d) / "ca")
        ids = issue_identities(ca, key, serials)
        for i, (serial, udid, pem, _k) in enumerate(ids):
            faults = DeviceFaults(**plan.get(i, {}))
            if faults.offline:
                out.append({"serial": serial, "status": "unreachable", "answers": {}})
                continue
            dev = SimDevice(serial=serial, udid=udid, cert_pem=pem, faults=faults)
            answers: dict[str, Any] = {}
            for cmd in queries:
                report = dev.execute(plistlib.loads(cmd.to_plist()))
                assert report is not None and report["Status"] in ("Acknowledged", "NotNow"), report
                if report["Status"] != "Acknowledged":
                    break
                response = {k: v for k, v in report.items() if k not in REPORT_ENVELOPE}
                ev = ParsedEvent(event_id="x", topic="mdm.Connect", created_at="", enrollment_id=udid, udid=udid,
                                 status="Acknowledged", command_uuid=cmd.uuid, request_type=cmd.request_type,
                                 payload=response)
                answers[cmd.request_type] = fact_value(ev)
            done = len(answers) == len(queries)
            out.append({"serial": serial, "status": "answered" if done else "unreachable",
                        "answers": answers if done else {}})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("state", type=Path)
    ap.add_argument("output", type=Path, nargs="?", default=REPO / "tests/compliance/data/nightly_fleet.json")
    ap.add_argument("--laptops", default="lap01,lap02,lap03,lap04,lap05,lap06")
    ap.add_argument("--off", default="lap06")
    args = ap.parse_args()
    import yaml

    from compliance.collect_laptops import run_facts_playbook
    from core.config import LabConfig, load_config
    from core.inventory import load_inventory
    from lab.laptops import Lab

    names = [n for n in args.laptops.split(",") if n]
    off = [n for n in args.off.split(",") if n]
    config = load_config(args.state / "werne.toml")
    inventory = load_inventory(config.inventory_dir)
    inventory.select_laptops(names)
    lab = Lab(args.state, cache_dir=LabConfig().cache_dir, demo=False)
    if off:
        lab.switch_off(off)
    try:
        gathered = run_facts_playbook(config, inventory, names, args.state / "artifacts")
    finally:
        if off:
            lab.switch_on(off)
    hosts = yaml.safe_load((config.inventory_dir / "hosts.yml").read_text(encoding="utf-8"))
    groups = hosts["all"]["children"]
    groups["laptops"]["hosts"] = {n: groups["laptops"]["hosts"][n] for n in names}
    hosts["all"]["vars"].pop("ansible_ssh_private_key_file", None)
    record = {
        "now": NOW,
        "hosts_yml": hosts,
        "playbook": {h: list(v) for h, v in sorted(gathered.items())},
        "ipads": ipad_answers(),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    print(f"{args.output}: {len(names)} laptops ({', '.join(f'{h} {s}' for h, (s, _) in sorted(gathered.items()))}), "
          f"{len(record['ipads'])} iPads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
