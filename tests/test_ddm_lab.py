"""Declarative device management through the real chain: `werne ipad update` puts the enforcement
into KMFDDM, KMFDDM enqueues DeclarativeManagement through NanoMDM, the simulated iPads fetch tokens,
declaration items and declarations through NanoMDM's check-in endpoint (forwarded to KMFDDM with
-dm), apply them and send status reports; at the deadline (on the clock the test moves) they update,
and the one whose model cannot take the version reports why. werne reads the status back from
KMFDDM and the nightly run uses it instead of queries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.fixtures_ddm import SCHOOLS, DDMWorld

pytestmark = [pytest.mark.mdm, pytest.mark.kmfddm, pytest.mark.slow]

TARGET = "18.3"


def _deadline_local(days: int = 3) -> str:
    from datetime import UTC, datetime

    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%d 18:00")


def test_an_update_for_one_school_reaches_its_ipads_and_their_status_comes_back(ddm_world: DDMWorld) -> None:
    from ipad.ddm_status import read_ddm_status
    from ipad.update import update

    w = ddm_world
    school, other = SCHOOLS
    ctx = w.context()
    report = update(ctx, TARGET, _deadline_local(), school=school)
    assert report.counts() == {"update": len(w.serials[school])}
    ours = [w.device(s) for s in w.serials[school]]
    theirs = [w.device(s) for s in w.serials[other]]
    # KMFDDM notified NanoMDM, NanoMDM handed out DeclarativeManagement, the iPads synchronised and
    # reported: the enforcement is active and valid on each, the update pending.
    w.wait("the school's iPads to report the pending update", lambda: all(
        d.ddm.reported.get("softwareupdate.pending-version", {}).get("os-version") == TARGET for d in ours))
    assert all(not d.ddm.declarations for d in theirs)  # the other school got nothing
    ids = {s: ctx.registry.devices_by_serial()[s].enrollment_id for s in w.serials[school]}
    status = read_ddm_status(w.kmfddm(), ids.values())
    assert set(status) == set(ids.values())
    for s, eid in ids.items():
        facts = status[eid].to_facts()
        assert facts["pending_version"] == TARGET and facts["os_version"] == "17.6.1"
        enforcement = [x for x in facts["declarations"] if ".softwareupdate-enforcement." in (x["identifier"] or "")]
        assert enforcement and enforcement[0]["active"] is True and enforcement[0]["valid"] == "valid", (s, facts)

    # The deadline passes on the iPads' clock: they install; the old model cannot and says why.
    w.clock.offset = timedelta(days=4)
    w.wait("the update or its failure to be reported", lambda: all(
        d.ddm.reported.get("device.operating-system.version") == TARGET
        or (d.ddm.reported.get("softwareupdate.failure-reason") or {}).get("count") for d in ours))
    status = read_ddm_status(w.kmfddm(), ids.values())
    for s, eid in ids.items():
        facts = status[eid].to_facts()
        if s == w.old_model:
            assert facts["os_version"] == "17.6.1" and facts["install_state"] == "failed"
            assert facts["failure_reason"] == "iPadOS 18.3 is not available for iPad6,11"
        else:
            assert facts["os_version"] == TARGET and facts["install_state"] == "none", facts
            assert facts["build"] and facts["pending_version"] is None
