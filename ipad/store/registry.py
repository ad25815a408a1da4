"""The iPad registry and stored command results, in the state database.

The webhook receiver feeds it (`apply_events`, one transaction per batch); the ipad actions read
it (`list_devices`, `devices_by_serial`, `command_states`) and record what they enqueue
(`record_planned`, `mark_not_queued`). UDID <-> serial <-> enrollment id <-> school come from the
check-ins and the inventory's ipads.csv.

Idempotency: each webhook event is stored once, by its `event_id` (unique). A batch first looks
up which of its event ids are known, skips those (and repeats inside the batch), and applies the
rest in the same transaction. Idle polls (`mdm.Connect` without a CommandUUID) only move
`last_seen_at` forward, which is idempotent by itself, so they are not kept as event rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from core.db import Database, bulk_execute, select_rows
from core.models import utcnow
from ipad.models import MDMCommand, MDMDevice, MDMDeviceFact, MDMWebhookEvent
from ipad.store import statements as sql
from ipad.store.devices import Device, Fact, as_utc, fact_of
from ipad.store.events import FINAL, PENDING, CommandState, EnrolmentEvent, ParsedEvent, created_order
from ipad.store.locations import LostModeLocations
from ipad.store.messages import CHUNK, MESSAGE_METHODS, Batch, DeviceMessages, Placement, RecordMessages, method_for
from ipad.store.observers import DropSecrets, Observer

_EPOCH = datetime.min.replace(tzinfo=UTC)


class Registry:
    """The iPad registry over one state database.

    `school_of` places a serial in its (school, group) by the inventory; `observers` run after the
    registry's own handling of each device message (ipad.store.observers), after the lost-mode
    locations every registry keeps.
    """

    def __init__(self, db: Database, school_of: Placement | None = None, observers: Sequence[Observer] = ()):
        self.db = db
        self.school_of: Placement = school_of or (lambda _serial: None)
        services: list[DeviceMessages] = [RecordMessages(), LostModeLocations(), *observers]
        if not any(s.keeps_secrets for s in services):
            services.append(DropSecrets())
        # Per message, the handlers that do something (a method left as DeviceMessages' no-op is skipped).
        self._handlers: dict[str, list[Callable[[Batch, ParsedEvent], None]]] = {
            name: [getattr(s, name) for s in services if getattr(type(s), name) is not getattr(DeviceMessages, name)]
            for name in MESSAGE_METHODS
        }
        self._after_batch = [s.batch_written for s in services
                             if type(s).batch_written is not DeviceMessages.batch_written]

    # -- writing (webhook) -----------------------------------------------------------------

    def apply_events(self, events: list[ParsedEvent]) -> tuple[list[bool], list[EnrolmentEvent]]:
        """Store a batch in one transaction. Returns (stored? per event, enrolment events)."""
        now = utcnow()
        stored = [False] * len(events)
        with self.db.transaction() as conn:
            fresh = self._fresh(conn, events)
            if not fresh:
                return stored, []
            self._insert_event_rows(conn, [events[i] for i in fresh if not events[i].is_idle], now)
            batch = Batch.load(conn, now, self.school_of, [events[i] for i in fresh])
            # NanoMDM posts events concurrently: apply them in its created_at order (events with the
            # same time in the order they arrived: sorted() keeps it).
            for i in sorted(fresh, key=lambda j: created_order(events[j].created_at)):
                e = events[i]
                stored[i] = True
                if e.parent_id is not None:
                    # A Shared iPad's user channel (or a user enrolment's): no device of its own, but
                    # it shows the device is alive.
                    batch.seen_parent(e)
                    continue
                batch.seen(e)
                for handle in self._handlers[method_for(e)]:
                    handle(batch, e)
            batch.write()
            for after in self._after_batch:
                after(batch)
        return stored, batch.enrolment_events

    @staticmethod
    def _fresh(conn: Connection, events: list[ParsedEvent]) -> list[int]:
        """Indexes of the events not stored before (nor earlier in this batch); Idle polls always."""
        ids = list({e.event_id for e in events if not e.is_idle})
        known: set[str] = set()
        for start in range(0, len(ids), CHUNK):
            found = select_rows(conn, sql.SELECT_KNOWN_EVENTS, {"ids": ids[start : start + CHUNK]})
            known.update(r["event_id"] for r in found)
        fresh: list[int] = []
        for i, e in enumerate(events):
            if e.is_idle:
                fresh.append(i)
            elif e.event_id not in known:
                known.add(e.event_id)
                fresh.append(i)
        return fresh

    @staticmethod
    def _insert_event_rows(conn: Connection, events: list[ParsedEvent], now: datetime) -> None:
        rows = [
            {
                "event_id": e.event_id,
                "topic": e.topic,
                "received_at": now,
                "created_at": e.created_at[:64],
                "enrollment_id": e.enrollment_id,
                "command_uuid": e.command_uuid,
                "status": e.status or e.message_type,
            }
            for e in events
        ]
        if rows:
            bulk_execute(conn, sql.INSERT_EVENT, rows)

    # -- writing (ipad actions) ------------------------------------------------------------

    def record_planned(
        self,
        command_uuid: str,
        request_type: str,
        enrollment_ids: Iterable[str],
        actor: str,
        detail: dict[str, object] | None = None,
    ) -> None:
        """Store a command as queued for each id *before* it is enqueued, so no answer can arrive first."""
        now = utcnow()
        rows = [
            {
                "command_uuid": command_uuid,
                "enrollment_id": eid,
                "request_type": request_type,
                "status": "queued",
                "actor": actor,
                "detail": detail or {},
                "enqueued_at": now,
                "updated_at": now,
                "not_now_count": 0,
                "error_chain": [],
                "result": {},
            }
            for eid in enrollment_ids
        ]
        if rows:
            with self.db.session() as s:
                s.connection().execute(insert(MDMCommand), rows)

    def mark_not_queued(self, command_uuid: str, reasons: dict[str, str]) -> None:
        """Ids the enqueue did not reach (NanoMDM said no, or was unreachable): status enqueue_failed."""
        if not reasons:
            return
        now = utcnow()
        with self.db.session() as s:
            conn = s.connection()
            for eid, reason in reasons.items():
                conn.execute(
                    update(MDMCommand)
                    .where(
                        MDMCommand.command_uuid == command_uuid,
                        MDMCommand.enrollment_id == eid,
                        MDMCommand.status == "queued",
                    )
                    .values(status="enqueue_failed", updated_at=now, result={"reason": reason})
                )

    # -- reading ---------------------------------------------------------------------------

    def list_devices(self, school: str | None = None) -> list[Device]:
        """Every enrolment (or one school's), with its facts; devices with no school last."""
        with self.db.session() as s:
            # Devices with no school last, on SQLite as on PostgreSQL (their NULL orders differ).
            q = select(MDMDevice).order_by(MDMDevice.school.is_(None), MDMDevice.school, MDMDevice.serial,
                                           MDMDevice.enrollment_id)
            if school is not None:
                q = q.where(MDMDevice.school == school)
            rows = list(s.scalars(q))
            facts: dict[str, dict[str, Fact]] = {}
            for f in s.scalars(select(MDMDeviceFact).where(~MDMDeviceFact.kind.like(sql.CHECKIN_FACT_PREFIX + "%"))):
                facts.setdefault(f.enrollment_id, {})[f.kind] = fact_of(f)
            return [Device.from_row(d, facts.get(d.enrollment_id, {})) for d in rows]

    def devices_by_serial(self) -> dict[str, Device]:
        """The newest enrolment of each serial."""
        out: dict[str, Device] = {}
        for d in self.list_devices():
            if d.serial and (
                d.serial not in out or (d.last_seen_at or _EPOCH) >= (out[d.serial].last_seen_at or _EPOCH)
            ):
                out[d.serial] = d
        return out

    def command_statuses(self, command_uuids: Iterable[str]) -> list[MDMCommand]:
        uuids = list(command_uuids)
        out: list[MDMCommand] = []
        with self.db.session() as s:
            for start in range(0, len(uuids), CHUNK):
                chunk = uuids[start : start + CHUNK]
                out.extend(s.scalars(select(MDMCommand).where(MDMCommand.command_uuid.in_(chunk))))
        return out

    def command_states(self, command_uuids: Iterable[str], since: datetime | None = None) -> list[CommandState]:
        """Status, NotNow count and ErrorChain of each (command, device), or only of those updated at
        or after `since`; cheap enough to poll."""
        uuids = list(command_uuids)
        out: list[CommandState] = []
        c = sql.COMMANDS.c
        with self.db.session() as s:
            conn = s.connection()
            for start in range(0, len(uuids), CHUNK):
                q = select(c.command_uuid, c.enrollment_id, c.status, c.not_now_count, c.error_chain).where(
                    c.command_uuid.in_(uuids[start : start + CHUNK])
                )
                if since is not None:
                    q = q.where(c.updated_at >= since)
                for row in conn.execute(q):
                    out.append(CommandState(*row))
        return out

    def answer_span(self, command_uuids: Iterable[str]) -> tuple[datetime, datetime, int] | None:
        """When the first and the last answer (not a NotNow) to these commands were stored, and how
        many there are; None before any. The webhook receiver's side of a sweep, from the rows alone."""
        uuids = list(command_uuids)
        c = sql.COMMANDS.c
        first: datetime | None = None
        last: datetime | None = None
        n = 0
        with self.db.session() as s:
            conn = s.connection()
            for start in range(0, len(uuids), CHUNK):
                row = conn.execute(
                    select(func.min(c.updated_at), func.max(c.updated_at), func.count()).where(
                        c.command_uuid.in_(uuids[start : start + CHUNK]), c.status.in_(sorted(FINAL))
                    )
                ).one()
                if row[2]:
                    lo, hi = as_utc(row[0]), as_utc(row[1])
                    first = lo if first is None or (lo is not None and lo < first) else first
                    last = hi if last is None or (hi is not None and hi > last) else last
                    n += row[2]
        return (first, last, n) if first is not None and last is not None else None

    def pending_commands(self) -> dict[str, list[MDMCommand]]:
        """Commands not yet answered for good, by enrollment id (queued or NotNow)."""
        out: dict[str, list[MDMCommand]] = {}
        with self.db.session() as s:
            for c in s.scalars(select(MDMCommand).where(MDMCommand.status.in_(PENDING))):
                c.enqueued_at = as_utc(c.enqueued_at)
                c.updated_at = as_utc(c.updated_at) or c.updated_at
                out.setdefault(c.enrollment_id, []).append(c)
        return out

    def answered_any(self, command_uuid: str) -> bool:
        """Whether any device has answered this command (NotNow included): NanoMDM stored it."""
        c = sql.COMMANDS.c
        with self.db.session() as s:
            return s.connection().execute(
                select(c.id).where(c.command_uuid == command_uuid,
                                   c.status.not_in(["queued", "enqueue_failed"])).limit(1)
            ).first() is not None

    def last_seen(self, enrollment_ids: Iterable[str]) -> dict[str, datetime]:
        """When the receiver last heard from each of these enrolments (any event, Idle polls too)."""
        ids = list(enrollment_ids)
        out: dict[str, datetime] = {}
        with self.db.session() as s:
            for start in range(0, len(ids), CHUNK):
                for eid, at in s.execute(select(MDMDevice.enrollment_id, MDMDevice.last_seen_at)
                                         .where(MDMDevice.enrollment_id.in_(ids[start : start + CHUNK]))):
                    when = as_utc(at)
                    if when is not None:
                        out[eid] = when
        return out

    def receiver_lag(self, window_s: float = 5.0, sample: int = 200) -> float | None:
        """How far the receiver is behind NanoMDM, in seconds: the median of (stored - created by
        NanoMDM) over the newest stored events (at most `sample`) that came within `window_s`; None
        when none came (Idle polls are not stored). Read by the newest ids, not by a scan."""
        with self.db.session() as s:
            rows = s.execute(select(MDMWebhookEvent.created_at, MDMWebhookEvent.received_at)
                             .order_by(MDMWebhookEvent.id.desc()).limit(sample)).all()
        recent = utcnow().timestamp() - window_s
        lags: list[float] = []
        for created, received in rows:
            stored = as_utc(received)
            if stored is None or stored.timestamp() < recent:
                continue
            try:
                made = datetime.fromisoformat(created)
            except (TypeError, ValueError):
                continue
            if made.tzinfo is not None:
                lags.append(stored.timestamp() - made.timestamp())
        return sorted(lags)[len(lags) // 2] if lags else None

    def last_answered_enqueue(self) -> dict[str, datetime]:
        """Per enrollment id, when werne queued the newest command the device answered for good.
        NanoMDM hands a device its queue oldest first, so a command still queued in werne but
        queued before that one was passed over: its answer's event never came (NanoMDM posts events
        best effort; a restart loses those in flight), and NanoMDM no longer holds it."""
        with self.db.session() as s:
            rows = s.execute(select(MDMCommand.enrollment_id, func.max(MDMCommand.enqueued_at))
                             .where(MDMCommand.status.in_(FINAL)).group_by(MDMCommand.enrollment_id)).all()
        out: dict[str, datetime] = {}
        for eid, at in rows:
            when = as_utc(at)
            if when is not None:
                out[eid] = when
        return out

    def last_errors(self) -> dict[str, MDMCommand]:
        """The newest failed command of each enrollment id (for the InstallProfile pain point)."""
        out: dict[str, MDMCommand] = {}
        with self.db.session() as s:
            for c in s.scalars(
                select(MDMCommand)
                .where(MDMCommand.status.in_(("Error", "CommandFormatError")))
                .order_by(MDMCommand.updated_at)
            ):
                out[c.enrollment_id] = c
        return out

    def events_since(
        self, last_id: int, topics: Iterable[str] = ("mdm.Authenticate", "mdm.TokenUpdate"), limit: int = 1000
    ) -> list[MDMWebhookEvent]:
        """Stored events after `last_id` with the given topics: the polling form of the enrolment hook."""
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(MDMWebhookEvent)
                    .where(MDMWebhookEvent.id > last_id, MDMWebhookEvent.topic.in_(list(topics)))
                    .order_by(MDMWebhookEvent.id)
                    .limit(limit)
                )
            )

    def counts(self) -> dict[str, int]:
        """Row counts of the mdm tables (tests use them to prove nothing was stored)."""
        with self.db.session() as s:
            return {
                t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0
                for t in (MDMDevice, MDMDeviceFact, MDMCommand, MDMWebhookEvent)
            }
