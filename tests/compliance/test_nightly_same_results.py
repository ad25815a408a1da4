"""No change to results (issue 27): today's nightly run concludes for a recorded fleet exactly what
the nightly of main without this work concluded for it (made from a27b696, the old main, first;
remade from main at d6c72b6 when main's Apple TV and classroom work changed what a run concludes,
and at 6ce2f7d when issue 22 made a rule whose every setting is left out not_applicable instead
of pass, and an iPad never seen says "never seen"; and when issue 25 added three laptop rules:
lx-recovery-key, lx-vulns-fixed and lx-vulns-unfixed, not_applicable or unreachable on the
recording, which has no LUKS volume and no imported security data; every other result the same).

tests/compliance/data/nightly_fleet.json is what the nightly read from the outside for 6 lab
laptops (one switched off) with the VPN gateway and 12 simulated iPads (two offline, the lab's
faults on others), recorded by tools/record_nightly_fleet.py; nightly_golden.json is every rule
result and the JSON report that code made of it (tools/nightly_golden.py --tree on its checkout).
The run here is today's code on the same recording: evidence, iPad facts, evaluation, waivers,
storing, chaining and report all its own."""

from __future__ import annotations

import json
from pathlib import Path

from tools.nightly_golden import FLEET, canonical, replay

GOLDEN = Path(__file__).resolve().parent / "data" / "nightly_golden.json"


def test_todays_nightly_concludes_what_the_old_one_did(tmp_path: Path) -> None:
    fleet = json.loads(FLEET.read_text(encoding="utf-8"))
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    got = json.loads(canonical(replay(fleet, tmp_path)))
    assert got["counts"] == want["counts"]
    assert got["results"] == want["results"]
    assert got["report"] == want["report"]
    assert got == want
    # The recording is a real mix, not a fleet where everything passes or nothing answers.
    statuses = {r[2] for r in got["results"]}
    assert {"pass", "fail", "unreachable", "not_applicable"} <= statuses
