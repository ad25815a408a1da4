"""What the registry does with each device message, one handler per message type.

Modelled on NanoMDM's service (service/service.go: one method per check-in message and one for
command reports) and its composition (service/multi: extra services run after the first one
answers): `DeviceMessages` has a no-op method per message; `RecordMessages` is the registry's own
service, which keeps devices, check-in times, facts and command results; observers
(ipad.store.observers) are further DeviceMessages that run after it for the same event, in the
same transaction. All of them work on one `Batch`: the batch's connection and time, the device rows
as loaded, and what the batch changes, which the registry writes when every event is handled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from core.db import IN_CHUNK, bulk_execute, in_chunks, select_rows
from ipad.store import statements as sql
from ipad.store.events import EnrolmentEvent, ParsedEvent, created_order
from ipad.store.facts import SERIAL_CONFLICT, fact_value, identity_cert_not_after, info_columns

log = logging.getLogger("werne.ipad.store")
# serial -> (school, group) from the inventory; None when the serial is not in it.
Placement = Callable[[str], tuple[str, str] | None]
# Rows are read in chunks of this many ids (SQLite's and PostgreSQL's parameter limits).
CHUNK = IN_CHUNK


class Batch:
    """One batch of events in its transaction: what the handlers read and what they change.

    `device(e)` is the writable set of changes to e's device (a whole new row on first sight),
    `current(e, key)` a device value as the batch has it so far. The handlers add facts, command
    reports and enrolment events; `write` stores the devices, facts and command results.
    """

    def __init__(self, conn: Connection, now: datetime, school_of: Placement, loaded: dict[str, dict[str, Any]],
                 checkin_times: dict[str, dict[str, str]]):
        self.conn = conn
        self.now = now
        self.school_of = school_of
        self.loaded = loaded
        self.checkin_times = checkin_times  # enrollment id -> check-in type -> its created_order
        self.changes: dict[str, dict[str, Any]] = {}
        self.new_devices: dict[str, dict[str, Any]] = {}
        self.facts: dict[tuple[str, str], dict[str, Any]] = {}
        self.command_reports: list[ParsedEvent] = []
        self.enrolment_events: list[EnrolmentEvent] = []

    @classmethod
    def load(cls, conn: Connection, now: datetime, school_of: Placement, events: list[ParsedEvent]) -> Batch:
        """Read the devices of these events, and the check-in times of those with a check-in among them."""
        loaded: dict[str, dict[str, Any]] = {}
        ids = {e.enrollment_id for e in events if e.parent_id is None} | {e.parent_id for e in events if e.parent_id}
        for chunk in in_chunks(list(ids)):
            for row in select_rows(conn, sql.SELECT_DEVICES, {"ids": chunk}):
                loaded[row["enrollment_id"]] = row
        # Check-in times only for devices with a check-in in this batch (rare next to results), and
        # for those werne knows only as authenticated (a connect of theirs may complete the enrolment).
        times: dict[str, dict[str, str]] = {}
        timed = {e.enrollment_id for e in events if e.message_type}
        timed |= {eid for eid, row in loaded.items() if row.get("state") == "authenticated"}
        for chunk in in_chunks(list(timed)):
            for row in select_rows(conn, sql.SELECT_CHECKIN_TIMES, {"ids": chunk}):
                kind = row["kind"].removeprefix(sql.CHECKIN_FACT_PREFIX)
                times.setdefault(row["enrollment_id"], {})[kind] = str(row["value"])
        return cls(conn, now, school_of, loaded, times)

    def device(self, e: ParsedEvent) -> dict[str, Any]:
        if e.enrollment_id in self.new_devices:
            return self.new_devices[e.enrollment_id]
        ch = self.changes.setdefault(e.enrollment_id, {})
        if e.enrollment_id not in self.loaded:
            # First sight (e.g. the receiver started after the device enrolled).
            d: dict[str, Any] = {
                "enrollment_id": e.enrollment_id,
                "udid": e.udid or e.enrollment_id,
                "state": None,  # a check-in sets it; "unconfirmed" when only answers were seen
                "token_update_tally": 0,
            }
            self.new_devices[e.enrollment_id] = d
            self.changes.pop(e.enrollment_id, None)
            return d
        return ch

    def current(self, e: ParsedEvent, key: str) -> Any:
        if e.enrollment_id in self.new_devices:
            return self.new_devices[e.enrollment_id].get(key)
        ch = self.changes.get(e.enrollment_id, {})
        return ch[key] if key in ch else self.loaded[e.enrollment_id].get(key)

    def seen(self, e: ParsedEvent) -> None:
        self.device(e)["last_seen_at"] = self.now

    def seen_parent(self, e: ParsedEvent) -> None:
        """A user-channel event: its device enrolment was seen (when werne knows it)."""
        parent = e.parent_id or ""
        if parent in self.new_devices:
            self.new_devices[parent]["last_seen_at"] = self.now
        elif parent in self.loaded:
            self.changes.setdefault(parent, {})["last_seen_at"] = self.now

    def set_fact(self, e: ParsedEvent, kind: str, value: Any, command_uuid: str | None) -> None:
        self.facts[(e.enrollment_id, kind)] = {
            "enrollment_id": e.enrollment_id,
            "kind": kind,
            "at": self.now,
            "command_uuid": command_uuid,
            "value": value,
        }

    def write(self) -> None:
        """Store what the handlers changed: new devices, changed columns, facts, command results."""
        if self.new_devices:
            # A device first seen by an answer (no Authenticate or TokenUpdate stored: the receiver was
            # down, or the answer is not what it claims) is "unconfirmed", never counted as enrolled.
            rows = [{**sql.NEW_DEVICE_BLANK, "token_update_tally": 0, **sql.device_columns(d),
                     "state": d["state"] or "unconfirmed"} for d in self.new_devices.values()]
            bulk_execute(self.conn, sql.INSERT_DEVICE, rows)
        # One compiled UPDATE per set of changed columns, run as executemany (most batches: one).
        by_columns: dict[frozenset[str], list[dict[str, Any]]] = {}
        for eid, ch in self.changes.items():
            if ch:
                cols = sql.device_columns(ch)
                params = {"b_eid": eid, **{f"b_{k}": v for k, v in cols.items()}}
                by_columns.setdefault(frozenset(cols), []).append(params)
        for columns, rows_of in by_columns.items():
            bulk_execute(self.conn, sql.update_devices(columns), rows_of)
        if self.facts:
            bulk_execute(self.conn, sql.upsert_facts(self.conn.dialect.name), list(self.facts.values()))
        if self.command_reports:
            self._write_command_results()

    def _write_command_results(self) -> None:
        """One upsert row per (CommandUUID, device): no lookup first (see statements.upsert_command_results).

        Several answers to one command in a batch (NotNow, then the answer) are merged here, in
        created_at order, because PostgreSQL refuses to update one row twice in one statement.
        """
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for e in self.command_reports:
            key = (e.command_uuid or "", e.enrollment_id)
            row = merged.get(key)
            if row is None:
                row = merged[key] = {
                    "command_uuid": key[0],
                    "enrollment_id": key[1],
                    "request_type": e.request_type or "",
                    "actor": "",
                    "detail": {},
                    "enqueued_at": None,
                    "error_chain": [],
                    "result": {},
                    "not_now_count": 0,
                }
            row["status"] = e.status
            row["updated_at"] = self.now
            if e.status == "NotNow":
                row["not_now_count"] += 1
            else:
                row["error_chain"] = e.error_chain
                row["result"] = e.safe_payload
            if e.request_type:  # the answer's own type wins, as in the upsert (statements)
                row["request_type"] = e.request_type
        bulk_execute(self.conn, sql.upsert_command_results(self.conn.dialect.name), list(merged.values()))


class DeviceMessages:
    """One method per device message, each a no-op here (NanoMDM's service interface).

    The registry calls, for every event of a batch in NanoMDM's created_at order, the method of its
    message on its own service and then on each observer; `batch_written` once the batch's rows are
    written, still inside its transaction. `keeps_secrets`: this one stores secret answers (the
    Activation Lock bypass code); without such an observer they are dropped with a warning.
    """

    keeps_secrets = False

    def authenticate(self, batch: Batch, e: ParsedEvent) -> None:
        """Authenticate: a device starts enrolling (or enrols again)."""

    def token_update(self, batch: Batch, e: ParsedEvent) -> None:
        """TokenUpdate: the device's push token (and UnlockToken); completes the enrolment."""

    def check_out(self, batch: Batch, e: ParsedEvent) -> None:
        """CheckOut: the MDM profile was removed."""

    def declarative_management(self, batch: Batch, e: ParsedEvent) -> None:
        """DeclarativeManagement: the declarative channel (KMFDDM reads it; only its time is kept here)."""

    def other_checkin(self, batch: Batch, e: ParsedEvent) -> None:
        """UserAuthenticate, GetBootstrapToken, SetBootstrapToken, GetToken: not used by werne."""

    def command_and_report_results(self, batch: Batch, e: ParsedEvent) -> None:
        """A command report: an answer (Acknowledged, Error, CommandFormatError, NotNow) or an Idle poll."""

    def batch_written(self, batch: Batch) -> None:
        """After the batch's devices, facts and command results are written, in its transaction."""


# Check-in MessageType -> the DeviceMessages method that handles it.
CHECKIN_METHODS = {
    "Authenticate": "authenticate",
    "TokenUpdate": "token_update",
    "CheckOut": "check_out",
    "DeclarativeManagement": "declarative_management",
}
OTHER_CHECKIN = "other_checkin"
COMMAND_REPORT = "command_and_report_results"
MESSAGE_METHODS = (*CHECKIN_METHODS.values(), OTHER_CHECKIN, COMMAND_REPORT)


def method_for(e: ParsedEvent) -> str:
    """The DeviceMessages method that handles this event."""
    if e.message_type:
        return CHECKIN_METHODS.get(e.message_type, OTHER_CHECKIN)
    return COMMAND_REPORT


class RecordMessages(DeviceMessages):
    """The registry's own service: device rows, check-in times, facts, command results, enrolment events.

    NanoMDM posts events concurrently, so a TokenUpdate can arrive before its Authenticate: the
    registry applies a batch in NanoMDM's created_at order, and each check-in's time is kept (as a
    `_checkin.<type>` fact) to compare check-ins across batches.
    """

    @staticmethod
    def _timed_checkin(batch: Batch, e: ParsedEvent) -> dict[str, str]:
        """Keep this check-in's time; the device's check-in times so far."""
        kind = e.message_type or ""
        times = batch.checkin_times.setdefault(e.enrollment_id, {})
        times[kind] = created_order(e.created_at)
        batch.set_fact(e, sql.CHECKIN_FACT_PREFIX + kind, times[kind], None)
        return times

    def authenticate(self, batch: Batch, e: ParsedEvent) -> None:
        self._timed_checkin(batch, e)
        serial = e.serial
        # NanoMDM stamps created_at when it sends the webhook, so an Authenticate can carry a later
        # time than the TokenUpdate that followed it: an Authenticate only starts an enrolment for a
        # new or checked-out device, never demotes an enrolled one.
        was = batch.current(e, "state")
        d = batch.device(e)
        d.update(
            udid=e.udid or e.enrollment_id,
            serial=serial,
            state="authenticated" if was in (None, "checked_out") else was,
            model=e.payload.get("ProductName") or e.payload.get("Model"),
            os_version=e.payload.get("OSVersion"),
            build_version=e.payload.get("BuildVersion"),
            device_name=e.payload.get("DeviceName"),
            topic=e.payload.get("Topic"),
            checked_out_at=None,
        )
        place = batch.school_of(serial) if serial else None
        if place:
            d["school"], d["group"] = place
        school = place[0] if place else batch.current(e, "school")
        batch.enrolment_events.append(EnrolmentEvent(e.topic, e.enrollment_id, e.udid, serial, school, None))

    def token_update(self, batch: Batch, e: ParsedEvent) -> None:
        times = self._timed_checkin(batch, e)
        d = batch.device(e)
        # On the same time, the check-in applied now came later (a later batch, or later in this one).
        if times.get("CheckOut", "") <= times["TokenUpdate"]:
            d["state"] = "enrolled"
        if batch.current(e, "enrolled_at") is None:
            d["enrolled_at"] = batch.now
        tally = e.token_update_tally
        d["token_update_tally"] = tally if tally is not None else (batch.current(e, "token_update_tally") or 0) + 1
        if isinstance(e.payload.get("UnlockToken"), bytes):
            d["unlock_token"] = e.payload["UnlockToken"]
        if "AwaitingConfiguration" in e.payload:
            d["awaiting_configuration"] = bool(e.payload["AwaitingConfiguration"])
        batch.enrolment_events.append(EnrolmentEvent(
            e.topic, e.enrollment_id, e.udid, batch.current(e, "serial"), batch.current(e, "school"),
            d["token_update_tally"]))

    def check_out(self, batch: Batch, e: ParsedEvent) -> None:
        times = self._timed_checkin(batch, e)
        if max(times.get("TokenUpdate", ""), times.get("Authenticate", "")) <= times["CheckOut"]:
            batch.device(e).update(state="checked_out", checked_out_at=batch.now)

    @staticmethod
    def _connected(batch: Batch, e: ParsedEvent) -> None:
        """A device connects (polls, answers) only once its TokenUpdate was taken: one that werne
        knows only as authenticated, connecting after that Authenticate, is enrolled, and its
        TokenUpdate's event was lost. NanoMDM posts events after it answered the device, best
        effort: a replica killed or the receiver down in between loses one (seen in the replica lab)."""
        if batch.current(e, "state") != "authenticated":
            return
        authenticated = batch.checkin_times.get(e.enrollment_id, {}).get("Authenticate", "")
        if created_order(e.created_at) <= authenticated:
            return  # a late connect from before this (re-)enrolment
        d = batch.device(e)
        d["state"] = "enrolled"
        if batch.current(e, "enrolled_at") is None:
            d["enrolled_at"] = batch.now

    def command_and_report_results(self, batch: Batch, e: ParsedEvent) -> None:
        self._connected(batch, e)
        if not (e.command_uuid and e.status):
            return  # an Idle poll: only seen
        batch.command_reports.append(e)
        if not e.acknowledged:
            return
        value = fact_value(e)
        if value is not None:
            batch.set_fact(e, e.request_type or "", value, e.command_uuid)
        qr = e.payload.get("QueryResponses") if e.request_type == "DeviceInformation" else None
        if isinstance(qr, dict):
            d = batch.device(e)
            d.update(info_columns(qr))
            reported, registered = qr.get("SerialNumber"), batch.current(e, "serial")
            if isinstance(reported, str) and not registered:
                d["serial"] = reported
            elif isinstance(reported, str) and reported.strip().upper() != registered:
                # Another serial than the enrolment's: a restored backup on other hardware, or an
                # answer that is not what it claims. The registered serial stays; the conflict is kept
                # (ipad list shows it) and logged.
                batch.set_fact(e, SERIAL_CONFLICT, {"registered": registered, "reported": reported}, e.command_uuid)
                log.warning("enrolment %s (registered as %s) answered DeviceInformation with serial number %s",
                            e.enrollment_id, registered, reported)
        if e.request_type == "CertificateList":
            not_after = identity_cert_not_after(e.payload.get("CertificateList"))
            if not_after is not None:
                batch.device(e)["identity_cert_not_after"] = not_after
