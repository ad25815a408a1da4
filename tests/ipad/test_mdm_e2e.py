"""End to end against a real NanoMDM: 20 simulated iPads, the real webhook receiver, the real CLI."""

from __future__ import annotations

import base64
import json
import plistlib
import sqlite3
import time

import pytest
import requests
from click.testing import CliRunner

from ipad.actions.listing import list_ipads
from ipad.webhook import sign

pytestmark = pytest.mark.mdm


def werne(world, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    from cli import main

    return CliRunner().invoke(main, ["--config", str(world.config_path), *args], input=input, catch_exceptions=False)


def sent(world) -> int:  # type: ignore[no-untyped-def]
    """Commands werne recorded as sent (rows the webhook adds for others' commands have no actor)."""
    con = sqlite3.connect(world.state_dir / "werne.db")
    try:
        return int(con.execute("select count(*) from mdm_commands where actor != ''").fetchone()[0])
    finally:
        con.close()


def test_twenty_ipads_enrol(mdm_world) -> None:
    assert mdm_world.wait_enrolled(60)
    ctx = mdm_world.context()
    rows = {}
    for _ in range(100):  # the webhook stores the last TokenUpdates a moment after the devices sent them
        rows = {r.serial: r for r in list_ipads(ctx)}
        if all(r.state == "enrolled" for r in rows.values()):
            break
        time.sleep(0.1)
    assert len(rows) == 20
    for school, serials in mdm_world.serials.items():
        for s in serials:
            row = rows[s]
            assert (row.state, row.school, row.group) == ("enrolled", school, mdm_world.groups[s])
            assert row.enrollment_id == mdm_world.sim.by_serial[s].udid
    # The enrolment hook saw an Authenticate and a TokenUpdate for every device.
    topics = {(e.topic, e.serial or "") for e in mdm_world.enrolled_events}
    assert {s for t, s in topics if t == "mdm.Authenticate"} == set(mdm_world.sim.by_serial)
    assert sum(1 for e in mdm_world.enrolled_events if e.topic == "mdm.TokenUpdate") >= 20


def test_query_stores_answers_and_notnow_device_answers_later(mdm_world) -> None:
    school = "gs-demo"
    r = werne(mdm_world, "ipad", "query", "--school", school, "--deadline", "30", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["counts"] == {"ok": 10} and report["not_answered"] == []
    ctx = mdm_world.context()
    devs = ctx.registry.devices_by_serial()
    for serial in mdm_world.serials[school]:
        facts = devs[serial].facts
        assert facts["DeviceInformation"]["value"]["SerialNumber"] == serial
        assert facts["SecurityInfo"]["value"]["HardwareEncryptionCaps"] == 3
        assert isinstance(facts["ProfileList"]["value"], list)
        assert devs[serial].identity_cert_not_after is not None
    # The NotNow device said NotNow twice, and answered at a later check-in.
    notnow = mdm_world.serials[school][1]
    sim_dev = mdm_world.sim.by_serial[notnow]
    assert sim_dev.not_now_sent == 2
    con = sqlite3.connect(mdm_world.state_dir / "werne.db")
    got = con.execute(
        "select status, not_now_count from mdm_commands where enrollment_id=? and not_now_count > 0",
        (sim_dev.udid,),
    ).fetchall()
    con.close()
    assert got and all(status == "Acknowledged" for status, _ in got)
    assert sum(n for _, n in got) == 2


def test_configure_plan_changes_nothing(mdm_world) -> None:
    before = sent(mdm_world)
    r = werne(mdm_world, "ipad", "configure", "--school", "gs-demo", "--plan")
    assert r.exit_code == 0, r.output
    assert "gs-demo:" in r.output and "install de.werne.ipad.wifi" in r.output
    assert "   10 iPads  install de.werne.ipad.passcode" in r.output
    assert "    8 iPads  install de.werne.ipad.webfilter" in r.output
    assert "Plan only: nothing was sent." in r.output
    assert sent(mdm_world) == before
    assert mdm_world.sim.devices and all(not d.profiles for d in mdm_world.sim.devices)


def test_configure_installs_group_profiles(mdm_world) -> None:
    from ipad.payloads.profiles import profile_set_for

    cfg = mdm_world.config()
    # 10 iPads > blast_radius 5: refused without --max-devices, nothing sent.
    before = sent(mdm_world)
    r = werne(mdm_world, "ipad", "configure", "--school", "gym-demo")
    assert r.exit_code == 2 and "mdm.blast_radius 5" in r.output and "--max-devices 10" in r.output
    assert sent(mdm_world) == before
    r = werne(mdm_world, "ipad", "configure", "--school", "gym-demo", "--max-devices", "10", "--deadline", "30")
    refusing = mdm_world.serials["gym-demo"][0]
    assert r.exit_code == 1, r.output  # the refusing device: findings
    ctx = mdm_world.context()
    devs = ctx.registry.devices_by_serial()
    for serial in mdm_world.serials["gym-demo"]:
        want = {p.identifier for p in profile_set_for(mdm_world.groups[serial], cfg)}
        if serial == refusing:
            want.discard("de.werne.ipad.webfilter")
        assert set(mdm_world.sim.by_serial[serial].profiles) == want
        # Read back through ProfileList answers stored by the webhook.
        stored = {p["PayloadIdentifier"] for p in devs[serial].facts["ProfileList"]["value"]}
        assert stored - {"com.werne.lab.mdm"} == want
    line = next(x for x in r.output.splitlines() if x.startswith(refusing))
    assert "InstallProfile de.werne.ipad.webfilter: Error (MCInstallationErrorDomain 4001" in line
    lst = werne(mdm_world, "ipad", "list", "--school", "gym-demo")
    row = next(x for x in lst.output.splitlines() if x.startswith(refusing))
    assert "InstallProfile de.werne.ipad.webfilter failed: MCInstallationErrorDomain 4001" in row
    # A second run has nothing left to do (exactly the group's set).
    plan = werne(mdm_world, "ipad", "configure", "--school", "gym-demo", "--plan", "--json")
    summary = json.loads(plan.output)["plan"]["gym-demo"]
    assert summary == {"no change": 9, "install de.werne.ipad.webfilter": 1}


def test_unknown_device_id_is_reported_per_id(mdm_world) -> None:
    from ipad import commands

    good = [mdm_world.sim.by_serial[s].udid for s in mdm_world.serials["gs-demo"][:3]]
    client = mdm_world.client(max_url_length=len(mdm_world.nanomdm.url) + 80)  # forces several requests
    res = client.enqueue(commands.device_information(["SerialNumber"]), [*good, "NO-SUCH-DEVICE"])
    assert sorted(res.queued) == sorted(good)
    assert list(res.failed) == ["NO-SUCH-DEVICE"]
    assert "not enrolled in NanoMDM" in res.failed["NO-SUCH-DEVICE"]
    # The lab has no APNs certificate: pushes fail, and that is reported as pending, not failed.
    assert set(res.push_pending) == set(good)
    assert all("next check-in" in v for v in res.push_pending.values())
    # Each request got its own CommandUUID (NanoMDM queues a UUID once), and every device answers.
    assert len(set(res.command_uuids.values())) > 1
    registry = mdm_world.context().registry
    answered: set[str] = set()
    for _ in range(300):
        answered = {
            c.enrollment_id
            for c in registry.command_states(set(res.command_uuids.values()))
            if c.status == "Acknowledged"
        }
        if answered >= set(good):
            break
        time.sleep(0.1)
    assert answered == set(good)


def test_wrong_api_key_message_names_request_not_key(mdm_world) -> None:
    from core.secrets import Secret
    from ipad.commands import profile_list
    from mdm_client.nanomdm import NanoMDMAuthError, NanoMDMClient

    client = NanoMDMClient(mdm_world.nanomdm.url, Secret("wrong-key-abc", "t"))
    with pytest.raises(NanoMDMAuthError) as e:
        client.enqueue(profile_list(), ["A"])
    assert str(e.value) == f"PUT {mdm_world.nanomdm.url}/v1/enqueue/A: 401 Unauthorized: NanoMDM refused the API key"
    assert "wrong-key-abc" not in str(e.value)


def test_unknown_serial_exits_2_naming_it(mdm_world) -> None:
    before = sent(mdm_world)
    r = werne(mdm_world, "ipad", "lock", mdm_world.serials["gs-demo"][0], "NOSUCH1234", "NOSUCH5678")
    assert r.exit_code == 2
    assert r.output == "Error: unknown serials: NOSUCH1234, NOSUCH5678 (not in ipads.csv and never enrolled)\n"
    assert sent(mdm_world) == before


def _captured_event(world) -> bytes:  # type: ignore[no-untyped-def]
    udid = world.sim.devices[0].udid
    raw = plistlib.dumps({"UDID": udid, "Status": "Acknowledged", "CommandUUID": "CAPTURED-1", "ProfileList": []})
    return json.dumps(
        {
            "topic": "mdm.Connect",
            "event_id": "captured-0001",
            "created_at": "2026-11-27T10:00:00Z",
            "acknowledge_event": {
                "udid": udid,
                "status": "Acknowledged",
                "command_uuid": "CAPTURED-1",
                "ids": {"id": udid, "type": "Device"},
                "raw_payload": base64.b64encode(raw).decode(),
            },
        }
    ).encode()


def _stored(world, event_id: str, command_uuid: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    # Live devices keep posting, so count this event's rows rather than whole tables.
    con = sqlite3.connect(world.state_dir / "werne.db")
    try:
        return (
            con.execute("select count(*) from mdm_webhook_events where event_id=?", (event_id,)).fetchone()[0],
            con.execute("select count(*) from mdm_commands where command_uuid=?", (command_uuid,)).fetchone()[0],
        )
    finally:
        con.close()


def test_duplicate_webhook_is_ignored(mdm_world) -> None:
    body = _captured_event(mdm_world)
    headers = {"X-Hmac-Signature": sign(body, mdm_world.hmac_key), "Content-Type": "application/json"}
    r1 = requests.post(mdm_world.webhook.url, data=body, headers=headers, timeout=10)
    assert _stored(mdm_world, "captured-0001", "CAPTURED-1") == (1, 1)
    con = sqlite3.connect(mdm_world.state_dir / "werne.db")
    first = con.execute("select updated_at from mdm_commands where command_uuid='CAPTURED-1'").fetchone()
    r2 = requests.post(mdm_world.webhook.url, data=body, headers=headers, timeout=10)
    again = con.execute("select updated_at from mdm_commands where command_uuid='CAPTURED-1'").fetchone()
    con.close()
    assert (r1.status_code, r1.text, r2.status_code, r2.text) == (200, "ok\n", 200, "duplicate\n")
    assert _stored(mdm_world, "captured-0001", "CAPTURED-1") == (1, 1)
    assert again == first


def test_bad_hmac_stores_nothing(mdm_world) -> None:
    body = _captured_event(mdm_world).replace(b"captured-0001", b"captured-0002").replace(b"CAPTURED-1", b"CAPTURED-2")
    wrong = requests.post(
        mdm_world.webhook.url, data=body, timeout=10, headers={"X-Hmac-Signature": sign(body, "not-the-key")}
    )
    missing = requests.post(mdm_world.webhook.url, data=body, timeout=10)
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert _stored(mdm_world, "captured-0002", "CAPTURED-2") == (0, 0)


def test_lock_lost_mode_and_clear_passcode(mdm_world) -> None:
    s = mdm_world.serials["gs-demo"][2]
    r = werne(mdm_world, "ipad", "lock", s, "--message", "Bitte abgeben", "--deadline", "20")
    assert r.exit_code == 0, r.output
    assert mdm_world.sim.by_serial[s].locked_message == "Bitte abgeben"
    r = werne(mdm_world, "ipad", "lost-mode", s, "--deadline", "20")  # default text: the school's phone
    assert r.exit_code == 0, r.output
    assert mdm_world.sim.by_serial[s].lost_mode
    r = werne(mdm_world, "ipad", "clear-passcode", s, "--deadline", "20")
    assert r.exit_code == 0, r.output
    assert mdm_world.sim.by_serial[s].passcode_present is False
    from core.audit import list_events

    actions = [(e.action, e.target, e.detail.get("result")) for e in list_events(mdm_world.db)]
    assert ("ipad.lock", s, {"ok": 1}) in actions and ("ipad.clear-passcode", s, {"ok": 1}) in actions


def test_wipe_needs_confirmation_and_an_unanswered_erase_is_reported(mdm_world) -> None:
    s = mdm_world.serials["gym-demo"][4]  # this device never answers EraseDevice
    before = sent(mdm_world)
    r = werne(mdm_world, "ipad", "wipe", s, input="WRONGSERIAL\n")
    assert r.exit_code == 2 and "did not match; nothing was wiped" in r.output
    r = werne(mdm_world, "ipad", "wipe", s, "--yes")
    assert r.exit_code == 2 and "--max-devices 1" in r.output
    r = werne(mdm_world, "ipad", "wipe", s, "--yes", "--max-devices", "2")
    assert r.exit_code == 2
    assert sent(mdm_world) == before
    assert not mdm_world.sim.by_serial[s].hung
    r = werne(mdm_world, "ipad", "wipe", s, "--deadline", "3", input=f"{s.lower()}\n")
    assert r.exit_code == 1, r.output
    assert f"no answer from: {s}" in r.output and "EraseDevice: queued (no answer within 3 s" in r.output
    assert mdm_world.sim.by_serial[s].hung
    from core.audit import list_events

    wipes = [e.detail.get("result") for e in list_events(mdm_world.db) if e.action == "ipad.wipe"]
    assert wipes == ["not confirmed", {"not ok": 1}]


def test_nanomdm_stopped_mid_run_gives_clear_error_and_no_corrupt_state(mdm_world) -> None:
    # Last test of the module: it stops NanoMDM.
    s = mdm_world.serials["gs-demo"][3]
    mdm_world.nanomdm.stop()
    r = werne(mdm_world, "ipad", "lock", s)
    assert r.exit_code == 3
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: PUT {mdm_world.nanomdm.url}/v1/enqueue/")
    assert "cannot connect (connection refused); is NanoMDM running" in lines[0]
    con = sqlite3.connect(mdm_world.state_dir / "werne.db")
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    udid = mdm_world.sim.by_serial[s].udid
    rows = con.execute(
        "select status from mdm_commands where enrollment_id=? and request_type='DeviceLock'", (udid,)
    ).fetchall()
    audit_rows = con.execute("select detail from audit_events where action='ipad.lock'").fetchall()
    con.close()
    assert rows == [("enqueue_failed",)]  # recorded as not queued, never as pending
    assert "error: PUT" in json.loads(audit_rows[-1][0])["result"]
