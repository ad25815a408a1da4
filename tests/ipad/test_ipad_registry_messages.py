"""The registry's handling of device messages: one handler per message type, observers given at
construction running after it in the batch's transaction, secret answers dropped without an observer
that keeps them, and the typed device view. Data files refuse a key given twice."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db import Database
from ipad.errors import DeclarationError, ProfileError
from ipad.payloads.declarations import load_declaration_spec
from ipad.payloads.profiles import load_profile_spec
from ipad.store.devices import Device
from ipad.store.events import ParsedEvent
from ipad.store.messages import Batch, DeviceMessages
from ipad.store.registry import Registry

EID = "00008120-0011223344556677"


def checkin(message_type: str, event_id: str, created_at: str, **payload: object) -> ParsedEvent:
    return ParsedEvent(event_id=event_id, topic=f"mdm.{message_type}", created_at=created_at, enrollment_id=EID,
                       udid=EID, message_type=message_type, payload=dict(payload),
                       serial="ZDWK1DEGZD" if message_type == "Authenticate" else None)


def report(event_id: str, request_type: str, status: str = "Acknowledged", **payload: object) -> ParsedEvent:
    return ParsedEvent(event_id=event_id, topic="mdm.Connect", created_at="2026-11-27T10:00:05Z", enrollment_id=EID,
                       udid=EID, status=status, command_uuid=f"C-{event_id}", request_type=request_type,
                       payload=dict(payload))


class Recorder(DeviceMessages):
    """An observer that notes what it was told, and what the registry's own handler had done by then."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, object]] = []

    def authenticate(self, batch: Batch, e: ParsedEvent) -> None:
        self.seen.append(("authenticate", e.event_id, batch.current(e, "state")))

    def token_update(self, batch: Batch, e: ParsedEvent) -> None:
        self.seen.append(("token_update", e.event_id, batch.current(e, "state")))

    def check_out(self, batch: Batch, e: ParsedEvent) -> None:
        self.seen.append(("check_out", e.event_id, batch.current(e, "state")))

    def declarative_management(self, batch: Batch, e: ParsedEvent) -> None:
        self.seen.append(("declarative_management", e.event_id, None))

    def command_and_report_results(self, batch: Batch, e: ParsedEvent) -> None:
        self.seen.append(("report", e.event_id, e.status))

    def batch_written(self, batch: Batch) -> None:
        # Inside the batch's transaction: the device row written by this batch is visible here.
        row = batch.conn.exec_driver_sql("SELECT state FROM mdm_devices WHERE enrollment_id = ?", (EID,)).one()
        self.seen.append(("written", "", row[0]))


class Refuses(DeviceMessages):
    """An observer that fails: the whole batch must roll back with it."""

    def token_update(self, batch: Batch, e: ParsedEvent) -> None:
        raise RuntimeError("observer failed")


@pytest.fixture
def db(tmp_path: Path, migrated_db) -> Iterator[Database]:  # type: ignore[no-untyped-def]
    database = Database(migrated_db(tmp_path / "werne.db"))
    yield database
    database.dispose()


def test_each_message_reaches_its_handler_then_the_observers_in_created_at_order(db: Database) -> None:
    recorder = Recorder()
    registry = Registry(db, school_of=lambda s: ("gs-demo", "pupil"), observers=[recorder])
    # Posted out of order (NanoMDM posts concurrently): applied in created_at order.
    stored, enrolments = registry.apply_events([
        checkin("TokenUpdate", "e2", "2026-11-27T10:00:02Z", UnlockToken=b"u"),
        checkin("Authenticate", "e1", "2026-11-27T10:00:01Z", OSVersion="17.6.1"),
        checkin("DeclarativeManagement", "e3", "2026-11-27T10:00:03Z"),
        report("e4", "SecurityInfo", SecurityInfo={"PasscodePresent": False}),
    ])
    assert stored == [True, True, True, True]
    assert [e.token_update_tally for e in enrolments] == [None, 1]
    assert recorder.seen == [
        ("authenticate", "e1", "authenticated"),  # the registry's own handler ran first
        ("token_update", "e2", "enrolled"),
        ("declarative_management", "e3", None),
        ("report", "e4", "Acknowledged"),
        ("written", "", "enrolled"),
    ]
    (dev,) = registry.list_devices()
    assert isinstance(dev, Device)
    assert (dev.serial, dev.school, dev.state, dev.os_version) == ("ZDWK1DEGZD", "gs-demo", "enrolled", "17.6.1")
    assert dev.security_info() == {"PasscodePresent": False} and dev.installed_profiles() is None
    # A repeated event changes nothing and reaches no handler.
    recorder.seen.clear()
    assert registry.apply_events([checkin("CheckOut", "e1", "2026-11-27T10:00:09Z")])[0] == [False]
    assert recorder.seen == []


def idle(event_id: str, created_at: str) -> ParsedEvent:
    return ParsedEvent(event_id=event_id, topic="mdm.Connect", created_at=created_at, enrollment_id=EID, udid=EID,
                       status="Idle")


def test_a_device_that_connects_after_its_authenticate_is_enrolled_when_its_token_update_was_lost(
        db: Database) -> None:
    """NanoMDM posts events after answering the device, best effort: a replica killed in between
    loses the TokenUpdate's event (the replica lab saw it). A device connects only once its
    TokenUpdate was taken, so its next poll or answer completes the enrolment in werne."""
    registry = Registry(db, school_of=lambda s: ("gs-demo", "pupil"))

    def state() -> tuple[str, bool]:
        (dev,) = registry.list_devices()
        return dev.state, dev.enrolled_at is not None

    registry.apply_events([checkin("Authenticate", "a1", "2026-11-27T10:00:01Z")])
    assert state() == ("authenticated", False)
    # A connect older than the Authenticate (from before this enrolment) proves nothing.
    registry.apply_events([idle("i0", "2026-11-27T10:00:00Z")])
    assert state() == ("authenticated", False)
    registry.apply_events([idle("i1", "2026-11-27T10:00:05Z")])  # a later batch, as the Idle flush is
    assert state() == ("enrolled", True)
    # A checked-out device that still polls stays checked out; a re-enrolment starts over.
    registry.apply_events([checkin("CheckOut", "c1", "2026-11-27T11:00:00Z")])
    registry.apply_events([idle("i2", "2026-11-27T11:00:05Z")])
    assert state()[0] == "checked_out"
    registry.apply_events([checkin("Authenticate", "a2", "2026-11-27T12:00:00Z")])
    registry.apply_events([idle("i3", "2026-11-27T11:59:59.5Z")])
    assert state()[0] == "authenticated"
    # An answer to a command counts as a connect too, in the same batch as the Authenticate.
    registry.apply_events([checkin("Authenticate", "a3", "2026-11-27T12:00:01Z"),
                           ParsedEvent(event_id="r1", topic="mdm.Connect", created_at="2026-11-27T12:00:02Z",
                                       enrollment_id=EID, udid=EID, status="NotNow", command_uuid="C-r1",
                                       request_type="DeviceInformation")])
    assert state()[0] == "enrolled"


def test_a_failing_observer_rolls_the_whole_batch_back(db: Database) -> None:
    registry = Registry(db, observers=[Refuses()])
    with pytest.raises(RuntimeError, match="observer failed"):
        registry.apply_events([checkin("Authenticate", "e1", "2026-11-27T10:00:01Z"),
                               checkin("TokenUpdate", "e2", "2026-11-27T10:00:02Z")])
    assert Registry(db).counts() == {"mdm_devices": 0, "mdm_device_facts": 0, "mdm_commands": 0,
                                     "mdm_webhook_events": 0}


def test_a_secret_answer_is_dropped_with_a_warning_when_no_observer_keeps_it(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    registry = Registry(db)
    code = "K1DJ9-4NZH2-PQ7RT"
    answer = report("e1", "ActivationLockBypassCode", ActivationLockBypassCode="***")
    answer.secret = code
    registry.apply_events([answer])
    assert "ActivationLockBypassCode answer of" in caplog.text and code not in caplog.text
    # An observer that keeps secrets takes the warning's place.

    class Keeps(DeviceMessages):
        keeps_secrets = True

        def __init__(self) -> None:
            self.kept: list[str] = []

        def command_and_report_results(self, batch: Batch, e: ParsedEvent) -> None:
            if e.secret is not None:
                self.kept.append(e.secret)

    caplog.clear()
    keeper = Keeps()
    again = report("e2", "ActivationLockBypassCode", ActivationLockBypassCode="***")
    again.secret = code
    Registry(db, observers=[keeper]).apply_events([again])
    assert keeper.kept == [code] and "dropped" not in caplog.text


@pytest.mark.parametrize("load, error, name", [
    (load_profile_spec, ProfileError, "wifi"),
    (load_declaration_spec, DeclarationError, "passcode"),
])
def test_a_key_given_twice_in_a_data_file_is_refused_with_its_line(tmp_path: Path, load, error, name) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / f"{name}.yaml").write_text(f"name: {name}\ntype: x\ndisplay_name: A\nname: {name}\n")
    with pytest.raises(error) as e:
        load(name, tmp_path)
    assert str(e.value).endswith(f"{name}.yaml:4: duplicate key 'name' (first at line 1)")
