#!/usr/bin/env python3
"""Replay a recorded fleet (tools/record_nightly_fleet.py) through a checkout's nightly run and
print what it concluded: every rule result and the JSON report, without what differs between two
runs by nature (run times, hashes, tool version, the timing breakdown).

Usage: tools/nightly_golden.py [--tree DIR] [--fleet FILE] [--out FILE]
    --tree: the checkout whose code runs (default: this one); with the baseline checkout of an
    older commit this makes tests/compliance/data/nightly_golden.json, "what the nightly concluded
    before", which tests/compliance/test_nightly_same_results.py holds today's code to.

The run is `compliance.run.run_compliance` of that checkout on a fresh state database with the
recorded fleet's inventory (its laptops and gateway, the example city's schools and iPads), at the
recorded clock: the laptops' facts playbook is replaced by the recording of what it returned (the
only change to the checkout's code, made from outside by rebinding
`compliance.collect_laptops.run_facts_playbook`), and the iPad sweep is the recorded answers (the
`sweep` every version of run_compliance takes). Evidence, VPN evidence, iPad facts, evaluation,
waivers, storing, chaining and the report are the checkout's own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FLEET = REPO / "tests" / "compliance" / "data" / "nightly_fleet.json"
# Report keys that differ between two runs of the same fleet by nature.
VOLATILE_RUN_KEYS = ("started_at", "finished_at", "record_hash", "prev_hash", "tool_version", "timings")


def replay(fleet: dict[str, Any], work: Path, settings: str = "", database_url: str | None = None,
           around: Any = None, fleets: tuple[str, ...] = ("laptops", "ipads")) -> dict[str, Any]:
    """Run the nightly of the code on sys.path over the recorded fleet in the directory work; its
    results and report (the facts playbook is rebound for the run only, and restored after).
    `settings`: more lines of the [compliance] section; `database_url`: a state database other than
    SQLite; `around(config)`: a context manager the run happens in (the sharded run's workers)."""
    import yaml

    import compliance.collect_laptops as collect_laptops
    from compliance.collect_ipads import SweptIPad
    from compliance.history import load_run
    from compliance.reports import render
    from compliance.run import run_compliance
    from core.config import load_config
    from core.db import Database
    from core.inventory import load_inventory

    inv = work / "inventory"
    shutil.copytree(REPO / "inventories" / "example-city", inv)
    (inv / "hosts.yml").write_text(yaml.safe_dump(fleet["hosts_yml"]), encoding="utf-8")
    # The recorded iPads only (the golden file stays small): the example city's rows of them.
    serials = {i["serial"] for i in fleet["ipads"]}
    header, *rows = (inv / "ipads.csv").read_text(encoding="utf-8").splitlines()
    (inv / "ipads.csv").write_text("\n".join([header, *(r for r in rows if r.split(";", 1)[0] in serials)]) + "\n",
                                   encoding="utf-8")
    state = work / "state"
    url = f'database_url = "{database_url}"\n' if database_url else ""
    (work / "werne.toml").write_text(
        f'[site]\ninventory = "{inv}"\nstate_dir = "{state}"\n{url}'
        '[compliance]\nluks_missing = "not_applicable"\napt_lists_missing = "not_applicable"\n' + settings,
        encoding="utf-8")
    config = load_config(work / "werne.toml")
    recorded = {h: tuple(v) for h, v in fleet["playbook"].items()}

    def playbook(_config: Any, _inventory: Any, hosts: list[str], *_args: Any, **_kwargs: Any) -> dict[str, Any]:
        return {h: recorded[h] for h in [*hosts, *_inventory.gateways]}

    def sweep(_deadline: float) -> list[SweptIPad]:
        return [SweptIPad(i["serial"], i["status"], dict(i["answers"])) for i in fleet["ipads"]]

    original = collect_laptops.run_facts_playbook
    collect_laptops.run_facts_playbook = playbook  # type: ignore[assignment]
    db = Database(config.database_url)
    try:
        with around(config) if around is not None else contextlib.nullcontext():
            summary = run_compliance(config, db, load_inventory(config.inventory_dir), fleets,
                                     sweep=sweep, now=datetime.fromisoformat(fleet["now"]))
        run = load_run(db, summary.run_id)
        results = sorted([d, r, x.status, x.evidence, x.waiver] for (d, r), x in run.results.items())
        report = json.loads(render(db, summary.run_id, "json"))
    finally:
        db.dispose()
        collect_laptops.run_facts_playbook = original  # type: ignore[assignment]
    for key in VOLATILE_RUN_KEYS:
        report["run"].pop(key, None)
    for t in report.get("trend", []):
        t.pop("finished_at", None)
    return {"exit_code": summary.exit_code, "counts": summary.counts, "results": results, "report": report}


def canonical(out: dict[str, Any]) -> str:
    """The text of a replay's outcome as the golden file holds it."""
    return json.dumps(out, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=REPO)
    ap.add_argument("--fleet", type=Path, default=FLEET)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out_file = args.out.resolve() if args.out is not None else None
    sys.path.insert(0, str(args.tree.resolve()))
    os.chdir(args.tree)
    fleet = json.loads(args.fleet.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="werne-golden-") as d:
        out = replay(fleet, Path(d))
    text = canonical(out)
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")
        print(f"{out_file}: {len(out['results'])} results, exit code {out['exit_code']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
