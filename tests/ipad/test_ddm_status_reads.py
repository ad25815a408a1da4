"""The nightly's declarative status reads are O(changes): after one full read, an iPad whose status
did not change costs one report read, one that reported once more costs one more, and what they
merge is what a full read from scratch gives (real KMFDDM, NanoMDM and simulated iPads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.ipad.ddm_world import SCHOOLS, DDMWorld

pytestmark = [pytest.mark.mdm, pytest.mark.kmfddm, pytest.mark.slow]


def _merged(status: dict[str, Any]) -> dict[str, Any]:
    return {eid: (st.reported_at, st.newest, st.items, st.item_times) for eid, st in status.items()}


def test_reads_take_only_the_reports_since_the_last_one(ddm_world: DDMWorld) -> None:
    from ipad.ddm.status import read_ddm_status
    from ipad.ddm.status_store import load_known, save_known
    from ipad.ddm.update import update

    w = ddm_world
    school = SCHOOLS[0]
    ctx = w.context()
    deadline = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d 18:00")
    update(ctx, "18.3", deadline, school=school)
    ours = [w.device(s) for s in w.serials[school]]
    w.wait("the school's iPads to report the pending update", lambda: all(
        d.ddm.reported.get("softwareupdate.pending-version", {}).get("os-version") == "18.3" for d in ours))
    # A second report after the first (full) one: the update installs at the deadline.
    w.clock.offset = timedelta(days=4)
    w.wait("the update or its failure to be reported", lambda: all(
        d.ddm.reported.get("device.operating-system.version") == "18.3"
        or (d.ddm.reported.get("softwareupdate.failure-reason") or {}).get("count") for d in ours))
    ids = {s: ctx.registry.devices_by_serial()[s].enrollment_id for s in w.serials[school]}
    client = w.kmfddm()

    full = read_ddm_status(client, ids.values())
    assert all(st.reports_read >= 2 for st in full.values()), {e: st.reports_read for e, st in full.items()}
    save_known(w.db, full)
    known = load_known(w.db, ids.values())
    assert _merged(known) == _merged(full)

    # Nothing new: one read each (the newest report, which is the one merged), nothing merged again.
    again = read_ddm_status(client, ids.values(), known=known)
    assert {e: st.reports_read for e, st in again.items()} == dict.fromkeys(ids.values(), 0)
    assert _merged(again) == _merged(full)

    # One iPad loses its passcode and reports it: only that report is read, and merged over the rest.
    changed = w.serials[school][0]
    w.device(changed).passcode_present = False
    w.wait("the changed iPad to report", lambda: w.device(changed).ddm.reported.get("passcode.is-present") is False)
    later = read_ddm_status(client, ids.values(), known=again)
    assert {e: st.reports_read for e, st in later.items()} == {e: int(s == changed) for s, e in ids.items()}
    assert later[ids[changed]].items["passcode.is-present"] is False
    assert _merged(later) == _merged(read_ddm_status(client, ids.values()))
