"""Which queries' answers were lost on their way to werne (ipad.dispatch.lost_answers): the rules,
case by case. The whole story (the receiver down while real NanoMDM hands simulated iPads their
queries, then every one asked again and answered) is in tests/lab/test_mdm_lab.py, and a NanoMDM
replica killed mid-query in tests/ipad/test_replicas_lab.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from core.config import load_config
from core.db import Database
from core.models import utcnow
from ipad import commands
from ipad.dispatch import LOST_AFTER_S, RECEIVER_BEHIND_S, CommandOutcome, Expected, Pending, Target, lost_answers
from ipad.models import MDMCommand, MDMWebhookEvent
from ipad.store.registry import Registry
from tests.fixtures.site import DEMO_INVENTORY, write_config

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
GRACE = timedelta(seconds=LOST_AFTER_S)
EID = "ENROLMENT-1"


def pending(command: commands.Command, rank: int, status: str = "queued", asked_again: bool = False) -> Pending:
    outcome = CommandOutcome(command.request_type, status)
    return Pending(outcome, command, Target("SERIAL1", "school", "group", None), rank, T0, asked_again)


def four() -> tuple[Expected, list[commands.Command]]:
    cmds = [commands.device_information(), commands.security_info(), commands.profile_list(),
            commands.certificate_list()]
    return {(c.uuid, EID): pending(c, rank) for rank, c in enumerate(cmds)}, cmds


def lost(expect: Expected, answered: dict[str, tuple[int, datetime]], now: datetime,
         heard: dict[str, datetime] | None = None, lag: float | None = None) -> list[str]:
    def last_seen(ids: list[str]) -> dict[str, datetime]:
        return {k: v for k, v in (heard or {}).items() if k in ids}

    keys = lost_answers(expect, answered, now, last_seen, lambda: lag)
    return [expect[k].command.request_type for k in keys]


def test_a_query_passed_over_by_a_later_answer_is_lost_once_the_grace_is_over() -> None:
    expect, cmds = four()
    # The device answered ranks 0, 2 and 3 (their rows left `expect`); rank 1's answer never came.
    for c in (cmds[0], cmds[2], cmds[3]):
        del expect[(c.uuid, EID)]
    seen = T0 + timedelta(seconds=1)
    assert lost(expect, {EID: (3, seen)}, seen + GRACE - timedelta(seconds=1)) == []
    assert lost(expect, {EID: (3, seen)}, seen + GRACE) == ["SecurityInfo"]


def test_the_last_query_is_lost_when_the_device_was_heard_from_after_its_last_answer() -> None:
    expect, cmds = four()
    for c in cmds[:3]:
        del expect[(c.uuid, EID)]
    seen = T0 + timedelta(seconds=1)
    now = seen + 2 * GRACE
    # Nothing heard after the last answer: the device may still be on its way (no Idle since).
    assert lost(expect, {EID: (2, seen)}, now, {EID: seen}) == []
    # An Idle poll heard well after it: the device was handed its queue since.
    assert lost(expect, {EID: (2, seen)}, now, {EID: seen + GRACE}) == ["CertificateList"]
    # ... but not one heard only just after it (the answer's event may merely be late).
    assert lost(expect, {EID: (2, seen)}, now, {EID: seen + GRACE / 2}) == []


def test_every_answer_lost_is_found_when_the_device_is_heard_from_later() -> None:
    expect, _ = four()  # the receiver was down: no answer came at all
    now = T0 + 3 * GRACE
    assert lost(expect, {}, now, {}) == []
    assert lost(expect, {}, now, {EID: T0 + GRACE / 2}) == []
    assert sorted(lost(expect, {}, now, {EID: T0 + 2 * GRACE})) == sorted(
        ["DeviceInformation", "SecurityInfo", "ProfileList", "CertificateList"])


def test_not_now_commands_that_change_the_device_and_those_asked_again_are_never_lost() -> None:
    seen = T0 + timedelta(seconds=1)
    now = T0 + 3 * GRACE
    heard = {EID: T0 + 2 * GRACE}
    install = commands.install_profile(b"<plist/>")
    erase = commands.erase_device()
    again = commands.profile_list()
    not_now = commands.security_info()
    expect: Expected = {(c.uuid, EID): p for c, p in (
        (install, pending(install, 0)), (erase, pending(erase, 1)), (again, pending(again, 2, asked_again=True)),
        (not_now, pending(not_now, 3, status="NotNow")))}
    assert lost(expect, {EID: (9, seen)}, now, heard) == []
    # The same queries, still queued and not asked before, are lost.
    fresh = commands.profile_list()
    expect[(fresh.uuid, EID)] = pending(fresh, 4)
    assert lost(expect, {EID: (9, seen)}, now, heard) == ["ProfileList"]


def test_a_query_queued_less_than_the_grace_ago_is_not_lost_yet() -> None:
    expect, _ = four()
    heard = {EID: T0 + GRACE}
    assert lost(expect, {}, T0 + GRACE - timedelta(seconds=1), heard) == []
    assert len(lost(expect, {}, T0 + GRACE, heard)) == 4


def test_every_query_command_werne_sends_is_read_only_and_nothing_that_changes_a_device_is() -> None:
    from ipad.actions.queries import ALWAYS, UNLESS_DDM, query_commands

    assert {c.request_type for c in query_commands()} | set(ALWAYS) | set(UNLESS_DDM) <= commands.READ_ONLY
    changes = [commands.install_profile(b"<plist/>"), commands.remove_profile("x"), commands.erase_device(),
               commands.device_lock(), commands.settings_device_name("x"), commands.schedule_os_update(),
               commands.install_application(1), commands.remove_application("x"), commands.enable_lost_mode("x"),
               commands.disable_lost_mode(), commands.activation_lock_bypass_code()]
    assert not {c.request_type for c in changes} & commands.READ_ONLY


def test_nothing_is_lost_while_the_receiver_is_behind() -> None:
    """Under a burst NanoMDM's posts queue up and come out of order: late, not lost."""
    expect, cmds = four()
    del expect[(cmds[3].uuid, EID)]
    seen = T0 + timedelta(seconds=1)
    now = seen + 2 * GRACE
    heard = {EID: seen + GRACE}
    assert lost(expect, {EID: (3, seen)}, now, heard, lag=RECEIVER_BEHIND_S + 0.5) == []
    assert len(lost(expect, {EID: (3, seen)}, now, heard, lag=RECEIVER_BEHIND_S - 0.5)) == 3
    assert len(lost(expect, {EID: (3, seen)}, now, heard, lag=None)) == 3  # nothing stored lately


@contextmanager
def registry_on_a_real_database(tmp_path: Path) -> Iterator[tuple[Database, Registry]]:
    cfg = load_config(write_config(tmp_path / "werne.toml", DEMO_INVENTORY, tmp_path / "state", ""))
    db = Database(cfg.database_url)
    try:
        yield db, Registry(db)
    finally:
        db.dispose()


def test_a_command_counts_as_stored_by_nanomdm_once_any_device_answered_it(tmp_path: Path) -> None:
    """What the client asks before it sends an enqueue again (mdm_client.nanomdm.enqueue_chunk)."""
    with registry_on_a_real_database(tmp_path) as (db, registry):
        registry.record_planned("UUID-1", "CertificateList", ["e1", "e2"], "test")
        registry.record_planned("UUID-2", "CertificateList", ["e1"], "test")
        registry.mark_not_queued("UUID-1", {"e2": "not queued: NanoMDM unreachable"})
        assert not registry.answered_any("UUID-1") and not registry.answered_any("UUID-2")
        for status in ("NotNow", "Acknowledged"):
            with db.session() as s:
                s.execute(update(MDMCommand).where(MDMCommand.command_uuid == "UUID-1",
                                                   MDMCommand.enrollment_id == "e1").values(status=status))
            assert registry.answered_any("UUID-1") and not registry.answered_any("UUID-2")


def test_the_receivers_lag_is_the_median_of_its_newest_events(tmp_path: Path) -> None:
    with registry_on_a_real_database(tmp_path) as (db, registry):
        assert registry.receiver_lag() is None
        now = utcnow()
        ids = iter(range(1000))

        def stored(n: int, late_s: float, ago_s: float = 0.0, created: str | None = None) -> None:
            with db.session() as s:
                for _ in range(n):
                    at = now - timedelta(seconds=ago_s)
                    made = (at - timedelta(seconds=late_s)).isoformat().replace("+00:00", "Z")
                    s.add(MDMWebhookEvent(event_id=f"e{next(ids)}", topic="mdm.Connect", received_at=at,
                                          created_at=made if created is None else created))

        stored(5, 30.0, ago_s=60.0)  # a burst a minute ago: not now
        assert registry.receiver_lag() is None
        stored(3, 0.05)
        stored(2, 8.0)
        stored(1, 0.0, created="not a time")
        lag = registry.receiver_lag()
        assert lag is not None and abs(lag - 0.05) < 0.01
        stored(4, 8.0)
        lag = registry.receiver_lag()
        assert lag is not None and abs(lag - 8.0) < 0.01
