"""The iPad registry and stored command results, in the state database.

The webhook receiver feeds it (`apply_events`, one transaction per batch); the ipad commands read
it (`list_devices`, `devices_by_serial`, `command_statuses`) and record what they enqueue
(`record_planned`, `mark_not_queued`). UDID <-> serial <-> enrollment id <-> school come from the
check-ins and the inventory's ipads.csv.

Idempotency: each webhook event is stored once, by its `event_id` (unique). A batch first looks
up which of its event ids are known, skips those (and repeats inside the batch), and applies the
rest in the same transaction. Idle polls (`mdm.Connect` without a CommandUUID) only move
`last_seen_at` forward, which is idempotent by itself, so they are not kept as event rows.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import bindparam, case, func, insert, literal_column, select, update

from core.db import Database, bulk_execute, select_rows
from core.errors import InputError
from core.models import utcnow
from ipad.models import MDMCommand, MDMDevice, MDMDeviceFact, MDMWebhookEvent
from mdm_client.errors import MDMError

log = logging.getLogger("werne.mdm.registry")

FINAL = frozenset({"Acknowledged", "Error", "CommandFormatError"})
PENDING = frozenset({"queued", "NotNow"})


class UnknownDevicesError(MDMError, InputError):
    """Serials or ids that are not in the registry or the inventory."""

    exit_code = 2

    def __init__(self, message: str, unknown: list[str]):
        super().__init__(message)
        self.unknown = unknown


@dataclass
class ParsedEvent:
    """A validated webhook event, ready to store."""

    event_id: str
    topic: str
    created_at: str
    enrollment_id: str
    udid: str
    message_type: str | None = None  # check-ins: Authenticate, TokenUpdate, CheckOut, ...
    status: str | None = None  # reports: Acknowledged, Error, NotNow, Idle, ...
    command_uuid: str | None = None
    request_type: str | None = None
    token_update_tally: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)  # check-in keys or the response keys
    error_chain: list[dict[str, Any]] = field(default_factory=list)
    serial: str | None = None
    # A secret answer taken out of `payload` by the webhook parser (the Activation Lock bypass code):
    # it reaches only the escrow sink (ipad.activation_lock), encrypted, never a stored payload.
    secret: str | None = field(default=None, repr=False)
    # A DeviceLocation answer taken out of `payload` the same way: stored only in
    # ipad_lost_mode_locations (ipad.lost_mode), deleted when lost mode ends.
    location: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def is_idle(self) -> bool:
        return self.status == "Idle" and not self.command_uuid

    @cached_property
    def safe_payload(self) -> dict[str, Any]:
        """The payload as stored (json_safe), computed once; the receiver does it before the batch."""
        return json_safe(self.payload)


@dataclass(frozen=True)
class CommandState:
    """Where one command to one device stands."""

    command_uuid: str
    enrollment_id: str
    status: str
    not_now_count: int
    error_chain: list[dict[str, Any]]


@dataclass(frozen=True)
class EnrolmentEvent:
    """What enrolment hooks receive after an Authenticate or TokenUpdate is stored."""

    topic: str
    enrollment_id: str
    udid: str
    serial: str | None
    school: str | None
    token_update_tally: int | None


def json_safe(value: Any, depth: int = 0) -> Any:
    """Plist values as JSON: data blobs become a short summary, dates ISO strings."""
    if depth > 20:
        return None
    # Hot path (every stored answer goes through here): exact plist scalars first, then exact
    # dicts and lists, before the general isinstance chain; the results are the same.
    t = type(value)
    if t is str or t is int or t is bool or t is float or value is None:
        return value
    if t is dict:
        d = depth + 1
        return {(k if type(k) is str else str(k)): json_safe(v, d) for k, v in value.items()}
    if t is list:
        d = depth + 1
        return [json_safe(v, d) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _identity_cert_not_after(cert_list: Any) -> datetime | None:
    """The soonest expiry of the identity certificates in a CertificateList answer."""
    from cryptography import x509

    soonest: datetime | None = None
    for item in cert_list if isinstance(cert_list, list) else []:
        if not isinstance(item, dict) or not item.get("IsIdentity") or not isinstance(item.get("Data"), bytes):
            continue
        try:
            not_after = x509.load_der_x509_certificate(item["Data"]).not_valid_after_utc
        except ValueError:
            continue
        soonest = not_after if soonest is None or not_after < soonest else soonest
    return soonest


def _fact_value(ev: ParsedEvent) -> Any:
    """What the device row keeps of an answer (None: nothing); the full answer stays in mdm_commands."""
    resp = ev.safe_payload
    if ev.request_type == "DeviceInformation":
        return resp.get("QueryResponses", {})
    if ev.request_type == "SecurityInfo":
        return resp.get("SecurityInfo", {})
    if ev.request_type == "ProfileList":
        return [
            {
                k: p.get(k)
                for k in (
                    "PayloadIdentifier",
                    "PayloadUUID",
                    "PayloadDisplayName",
                    "PayloadVersion",
                    "IsManaged",
                )
            }
            for p in resp.get("ProfileList", [])
            if isinstance(p, dict)
        ]
    if ev.request_type == "Restrictions":
        # The effective values only: {restriction name: value} from restrictedBool/restrictedValue,
        # {name: [values]} from intersection/union.
        glob = resp.get("GlobalRestrictions") or {}
        flat: dict[str, Any] = {}
        for group, inner in (("restrictedBool", "value"), ("restrictedValue", "value"),
                             ("intersection", "values"), ("union", "values")):
            for name, entry in (glob.get(group) or {}).items():
                if isinstance(entry, dict) and inner in entry:
                    flat[str(name)] = entry[inner]
        return flat
    if ev.request_type == "CertificateList":
        return [
            {k: c.get(k) for k in ("CommonName", "IsIdentity")}
            for c in resp.get("CertificateList", [])
            if isinstance(c, dict)
        ]
    if ev.request_type == "ManagedApplicationList":
        apps = resp.get("ManagedApplicationList")
        return {
            str(bundle): {k: a.get(k) for k in ("Status", "IsValidated", "ManagementFlags")}
            for bundle, a in (apps.items() if isinstance(apps, dict) else ())
            if isinstance(a, dict)
        }
    if ev.request_type == "InstalledApplicationList":
        return [
            {k: a.get(k) for k in ("Identifier", "Name", "ShortVersion")}
            for a in resp.get("InstalledApplicationList", [])
            if isinstance(a, dict)
        ]
    return None


def _dialect_insert(table: Any, dialect: str) -> Any:
    """An INSERT with the dialect's ON CONFLICT clauses (PostgreSQL or SQLite)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)


def _upsert_facts(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (enrollment_id, kind) DO UPDATE, for SQLite or PostgreSQL."""
    stmt = _STATEMENTS.get(("facts-upsert", frozenset(), (dialect,)))
    if stmt is None:
        ins = _dialect_insert(_T_FACT, dialect)
        stmt = ins.on_conflict_do_update(
            index_elements=["enrollment_id", "kind"],
            set_={
                "at": ins.excluded.at,
                "command_uuid": ins.excluded.command_uuid,
                "value": ins.excluded.value,
            },
        )
        _STATEMENTS[("facts-upsert", frozenset(), (dialect,))] = stmt
    return stmt


def _upsert_commands(dialect: str) -> Any:
    """INSERT a command result ... ON CONFLICT (command_uuid, enrollment_id) DO UPDATE.

    A row that `werne ipad` recorded when it enqueued the command (status queued, actor, detail)
    keeps those; the answer sets status and time, adds its NotNow count, and replaces the error
    chain and result unless it is a NotNow (which carries neither); an empty request_type is filled.
    """
    stmt = _STATEMENTS.get(("commands-upsert", frozenset(), (dialect,)))
    if stmt is None:
        ins = _dialect_insert(_T_CMD, dialect)
        new, old = ins.excluded, _T_CMD.c
        not_now = new.status == literal_column("'NotNow'")
        stmt = ins.on_conflict_do_update(
            index_elements=["command_uuid", "enrollment_id"],
            set_={
                "status": new.status,
                "updated_at": new.updated_at,
                "not_now_count": func.coalesce(old.not_now_count, literal_column("0")) + new.not_now_count,
                "error_chain": case((not_now, old.error_chain), else_=new.error_chain),
                "result": case((not_now, old.result), else_=new.result),
                "request_type": case(
                    (old.request_type == literal_column("''"), new.request_type), else_=old.request_type
                ),
            },
        )
        _STATEMENTS[("commands-upsert", frozenset(), (dialect,))] = stmt
    return stmt


def _ts_key(created_at: str) -> str:
    """NanoMDM's RFC 3339 created_at as a sortable string (fraction padded to 9 digits)."""
    t = created_at.rstrip("Z")
    base, _, frac = t.partition(".")
    return f"{base}.{frac[:9]:0<9}"


def _as_utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


EnrolmentHook = Callable[[EnrolmentEvent], None]
# (connection, enrollment_id, serial, command_uuid, secret) -> None; stores a secret answer in the
# batch's transaction (ipad.activation_lock.install_escrow sets it).
EscrowSink = Callable[[Any, str, str | None, str | None, str], None]
_escrow_sink: list[EscrowSink] = []


def set_escrow_sink(sink: EscrowSink | None) -> None:
    """Where secret answers (bypass codes) go; None: they are dropped, with a warning."""
    _escrow_sink[:] = [sink] if sink is not None else []

_T_DEV = MDMDevice.__table__
_T_CMD = MDMCommand.__table__
_T_EV = MDMWebhookEvent.__table__
_T_FACT = MDMDeviceFact.__table__
_STATEMENTS: dict[tuple[str, frozenset[str], tuple[str, ...]], Any] = {}
_INSERT_EV = insert(_T_EV)
# The batch's lookups, built once (SQLAlchemy then compiles each once per list length).
_SEL_KNOWN_EVENTS = select(_T_EV.c.event_id).where(_T_EV.c.event_id.in_(bindparam("ids", expanding=True)))
_SEL_DEVICES = select(_T_DEV).where(_T_DEV.c.enrollment_id.in_(bindparam("ids", expanding=True)))
_SEL_CHECKIN_TIMES = select(_T_FACT.c.enrollment_id, _T_FACT.c.kind, _T_FACT.c.value).where(
    _T_FACT.c.enrollment_id.in_(bindparam("ids", expanding=True)), _T_FACT.c.kind.like("_checkin.%")
)
_INSERT_DEV = insert(_T_DEV)


def _cols(values: dict[str, Any]) -> dict[str, Any]:
    """ORM attribute names to column names (only `group` differs: the column is ipad_group)."""
    return {("ipad_group" if k == "group" else k): v for k, v in values.items()}


def _update_stmt(table: Any, keys: frozenset[str], where: tuple[str, ...]) -> Any:
    """A cached Core UPDATE for executemany: SET each key = :b_key WHERE each where-column = :b_col.

    Built once per column set, so SQLAlchemy compiles it once (per-row ORM updates cost ~10x more).
    """
    cache_key = (table.name, keys, where)
    stmt = _STATEMENTS.get(cache_key)
    if stmt is None:
        stmt = update(table)
        for col in where:
            stmt = stmt.where(
                table.c[col] == bindparam(f"b_{col}" if col != "enrollment_id" or table is not _T_DEV else "b_eid")
            )
        stmt = stmt.values({k: bindparam(f"b_{k}") for k in sorted(keys)})
        _STATEMENTS[cache_key] = stmt
    return stmt


class Registry:
    """The iPad registry over one state database."""

    def __init__(self, db: Database, school_of: Callable[[str], tuple[str, str] | None] | None = None):
        self.db = db
        # serial -> (school, group) from the inventory; None when the serial is not in it.
        self.school_of = school_of or (lambda _serial: None)

    # -- writing (webhook) -----------------------------------------------------------------

    def apply_events(self, events: list[ParsedEvent]) -> tuple[list[bool], list[EnrolmentEvent]]:
        """Store a batch in one transaction. Returns (stored? per event, enrolment events)."""
        now = utcnow()
        stored = [False] * len(events)
        hooks: list[EnrolmentEvent] = []
        with self.db.transaction() as conn:
            keyed = [i for i, e in enumerate(events) if not e.is_idle]
            ids = list({events[i].event_id for i in keyed})
            known: set[str] = set()
            for start in range(0, len(ids), 500):
                found = select_rows(conn, _SEL_KNOWN_EVENTS, {"ids": ids[start : start + 500]})
                known.update(r["event_id"] for r in found)
            fresh: list[int] = []
            for i, e in enumerate(events):
                if e.is_idle:
                    fresh.append(i)
                elif e.event_id not in known:
                    known.add(e.event_id)
                    fresh.append(i)
            if not fresh:
                return stored, hooks
            rows = [
                {
                    "event_id": events[i].event_id,
                    "topic": events[i].topic,
                    "received_at": now,
                    "created_at": events[i].created_at[:64],
                    "enrollment_id": events[i].enrollment_id,
                    "command_uuid": events[i].command_uuid,
                    "status": events[i].status or events[i].message_type,
                }
                for i in fresh
                if not events[i].is_idle
            ]
            if rows:
                bulk_execute(conn, _INSERT_EV, rows)
            eids = list({events[i].enrollment_id for i in fresh})
            devices: dict[str, dict[str, Any]] = {}
            for start in range(0, len(eids), 500):
                for row in select_rows(conn, _SEL_DEVICES, {"ids": eids[start : start + 500]}):
                    devices[row["enrollment_id"]] = row
            # Check-in times, only for devices with a check-in in this batch (rare next to results).
            times_of: dict[str, dict[str, str]] = {}
            checkin_ids = list({events[i].enrollment_id for i in fresh if events[i].message_type})
            for start in range(0, len(checkin_ids), 500):
                for row in select_rows(conn, _SEL_CHECKIN_TIMES, {"ids": checkin_ids[start : start + 500]}):
                    eid, kind, value = row["enrollment_id"], row["kind"], row["value"]
                    times_of.setdefault(eid, {})[kind.removeprefix("_checkin.")] = str(value)
            facts_out: dict[tuple[str, str], dict[str, Any]] = {}
            changes: dict[str, dict[str, Any]] = {}
            new_devices: dict[str, dict[str, Any]] = {}

            def device(e: ParsedEvent) -> dict[str, Any]:
                if e.enrollment_id in new_devices:
                    return new_devices[e.enrollment_id]
                ch = changes.setdefault(e.enrollment_id, {})
                if e.enrollment_id not in devices:
                    # First sight (e.g. the receiver started after the device enrolled).
                    d = {
                        "enrollment_id": e.enrollment_id,
                        "udid": e.udid or e.enrollment_id,
                        "state": None,  # "enrolled" unless a check-in says otherwise
                        "token_update_tally": 0,
                    }
                    new_devices[e.enrollment_id] = d
                    changes.pop(e.enrollment_id, None)
                    return d
                return ch

            def current(e: ParsedEvent, key: str) -> Any:
                if e.enrollment_id in new_devices:
                    return new_devices[e.enrollment_id].get(key)
                ch = changes.get(e.enrollment_id, {})
                return ch[key] if key in ch else devices[e.enrollment_id].get(key)

            cmd_events: list[ParsedEvent] = []
            # NanoMDM posts events concurrently, so a TokenUpdate can arrive before its Authenticate:
            # apply in NanoMDM's created_at order, and keep each check-in's time to compare across batches.
            for i in sorted(fresh, key=lambda j: _ts_key(events[j].created_at)):
                e = events[i]
                stored[i] = True
                d = device(e)
                d["last_seen_at"] = now
                if e.message_type in ("Authenticate", "TokenUpdate", "CheckOut"):
                    times = times_of.setdefault(e.enrollment_id, {})
                    times[e.message_type] = _ts_key(e.created_at)
                    kind = f"_checkin.{e.message_type}"
                    facts_out[(e.enrollment_id, kind)] = {
                        "enrollment_id": e.enrollment_id,
                        "kind": kind,
                        "at": now,
                        "command_uuid": None,
                        "value": times[e.message_type],
                    }
                if e.message_type == "Authenticate":
                    serial = e.serial
                    # NanoMDM stamps created_at when it sends the webhook, so an Authenticate can
                    # carry a later time than the TokenUpdate that followed it: an Authenticate only
                    # starts an enrolment for a new or checked-out device, never demotes an enrolled one.
                    was = current(e, "state")
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
                    place = self.school_of(serial) if serial else None
                    if place:
                        d["school"], d["group"] = place
                    hooks.append(
                        EnrolmentEvent(
                            e.topic,
                            e.enrollment_id,
                            e.udid,
                            serial,
                            place[0] if place else current(e, "school"),
                            None,
                        )
                    )
                elif e.message_type == "TokenUpdate":
                    if times.get("CheckOut", "") < times["TokenUpdate"]:
                        d["state"] = "enrolled"
                    if current(e, "enrolled_at") is None:
                        d["enrolled_at"] = now
                    tally = e.token_update_tally
                    d["token_update_tally"] = (
                        tally if tally is not None else (current(e, "token_update_tally") or 0) + 1
                    )
                    if isinstance(e.payload.get("UnlockToken"), bytes):
                        d["unlock_token"] = e.payload["UnlockToken"]
                    if "AwaitingConfiguration" in e.payload:
                        d["awaiting_configuration"] = bool(e.payload["AwaitingConfiguration"])
                    hooks.append(
                        EnrolmentEvent(
                            e.topic,
                            e.enrollment_id,
                            e.udid,
                            current(e, "serial"),
                            current(e, "school"),
                            d["token_update_tally"],
                        )
                    )
                elif e.message_type == "CheckOut":
                    if max(times.get("TokenUpdate", ""), times.get("Authenticate", "")) < times["CheckOut"]:
                        d.update(state="checked_out", checked_out_at=now)
                elif e.command_uuid and e.status:
                    cmd_events.append(e)
                    if e.secret is not None and e.status == "Acknowledged":
                        if _escrow_sink:
                            _escrow_sink[0](conn, e.enrollment_id, current(e, "serial"), e.command_uuid, e.secret)
                        else:
                            log.warning("%s answer of %s dropped: no escrow key configured "
                                        "(activation_lock.key_file)", e.request_type, e.enrollment_id)
                    if e.location is not None and e.status == "Acknowledged":
                        from ipad.lost_mode import store_location

                        store_location(conn, e.enrollment_id, e.command_uuid, e.location)
                    if e.status == "Acknowledged":
                        value = _fact_value(e)
                        if value is not None:
                            kind = e.request_type or ""
                            facts_out[(e.enrollment_id, kind)] = {
                                "enrollment_id": e.enrollment_id,
                                "kind": kind,
                                "at": now,
                                "command_uuid": e.command_uuid,
                                "value": value,
                            }
                        qr = e.payload.get("QueryResponses") if e.request_type == "DeviceInformation" else None
                        if isinstance(qr, dict):
                            for col, key in (
                                ("os_version", "OSVersion"),
                                ("build_version", "BuildVersion"),
                                ("device_name", "DeviceName"),
                                ("model", "ProductName"),
                            ):
                                if isinstance(qr.get(key), str):
                                    d[col] = qr[key]
                            if isinstance(qr.get("AwaitingConfiguration"), bool):
                                d["awaiting_configuration"] = qr["AwaitingConfiguration"]
                            if isinstance(qr.get("SerialNumber"), str) and not current(e, "serial"):
                                d["serial"] = qr["SerialNumber"]
                        if e.request_type == "CertificateList":
                            na = _identity_cert_not_after(e.payload.get("CertificateList"))
                            if na is not None:
                                d["identity_cert_not_after"] = na
            if new_devices:
                # executemany needs the same keys in every row.
                blank = {c.key: None for c in _T_DEV.columns if c.key != "id"}
                bulk_execute(
                    conn,
                    _INSERT_DEV,
                    [
                        {**blank, "token_update_tally": 0, **_cols(d), "state": d["state"] or "enrolled"}
                        for d in new_devices.values()
                    ],
                )
            # One compiled UPDATE per set of changed columns, run as executemany (most batches: one).
            by_keys: dict[frozenset[str], list[dict[str, Any]]] = {}
            for eid, ch in changes.items():
                if ch:
                    cols = _cols(ch)
                    by_keys.setdefault(frozenset(cols), []).append(
                        {"b_eid": eid, **{f"b_{k}": v for k, v in cols.items()}}
                    )
            for keys, params in by_keys.items():
                bulk_execute(conn, _update_stmt(_T_DEV, keys, ("enrollment_id",)), params)
            if facts_out:
                bulk_execute(conn, _upsert_facts(conn.dialect.name), list(facts_out.values()))
            if cmd_events:
                self._apply_command_results(conn, cmd_events, now)
                from ipad.lost_mode import forget_locations_of_ended_lost_mode

                forget_locations_of_ended_lost_mode(conn, cmd_events)
        return stored, hooks

    @staticmethod
    def _apply_command_results(conn: Any, evs: list[ParsedEvent], now: datetime) -> None:
        """One upsert row per (CommandUUID, device): no lookup first (see _upsert_commands).

        Several answers to one command in a batch (NotNow, then the answer) are merged here, in
        created_at order, because PostgreSQL refuses to update one row twice in one statement.
        """
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for e in evs:
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
            row["updated_at"] = now
            if e.status == "NotNow":
                row["not_now_count"] += 1
            else:
                row["error_chain"] = e.error_chain
                row["result"] = e.safe_payload
            if e.request_type and not row["request_type"]:
                row["request_type"] = e.request_type
        bulk_execute(conn, _upsert_commands(conn.dialect.name), list(merged.values()))

    # -- writing (ipad commands) -----------------------------------------------------------

    def record_planned(
        self,
        command_uuid: str,
        request_type: str,
        enrollment_ids: Iterable[str],
        actor: str,
        detail: dict[str, Any] | None = None,
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

    def list_devices(self, school: str | None = None) -> list[MDMDevice]:
        with self.db.session() as s:
            # Devices with no school last, on SQLite as on PostgreSQL (their NULL orders differ).
            q = select(MDMDevice).order_by(MDMDevice.school.is_(None), MDMDevice.school, MDMDevice.serial,
                                           MDMDevice.enrollment_id)
            if school is not None:
                q = q.where(MDMDevice.school == school)
            devs = list(s.scalars(q))
            facts: dict[str, dict[str, Any]] = {}
            for f in s.scalars(select(MDMDeviceFact).where(~MDMDeviceFact.kind.like("_checkin.%"))):
                facts.setdefault(f.enrollment_id, {})[f.kind] = {
                    "at": _as_utc(f.at),
                    "command_uuid": f.command_uuid,
                    "value": f.value,
                }
        for d in devs:
            # Not a column: the newest answers by kind, {"at", "command_uuid", "value"} each.
            d.facts = facts.get(d.enrollment_id, {})  # type: ignore[attr-defined]
            d.last_seen_at = _as_utc(d.last_seen_at)
            d.enrolled_at = _as_utc(d.enrolled_at)
            d.checked_out_at = _as_utc(d.checked_out_at)
            d.identity_cert_not_after = _as_utc(d.identity_cert_not_after)
        return devs

    def devices_by_serial(self) -> dict[str, MDMDevice]:
        """The newest enrolment of each serial."""
        out: dict[str, MDMDevice] = {}
        for d in self.list_devices():
            if d.serial and (
                d.serial not in out
                or (d.last_seen_at or datetime.min.replace(tzinfo=UTC))
                >= (out[d.serial].last_seen_at or datetime.min.replace(tzinfo=UTC))
            ):
                out[d.serial] = d
        return out

    def command_statuses(self, command_uuids: Iterable[str]) -> list[MDMCommand]:
        uuids = list(command_uuids)
        out: list[MDMCommand] = []
        with self.db.session() as s:
            for start in range(0, len(uuids), 500):
                out.extend(s.scalars(select(MDMCommand).where(MDMCommand.command_uuid.in_(uuids[start : start + 500]))))
        return out

    def command_states(self, command_uuids: Iterable[str]) -> list[CommandState]:
        """Status, NotNow count and ErrorChain of each (command, device); cheap enough to poll."""
        uuids = list(command_uuids)
        out: list[CommandState] = []
        c = _T_CMD.c
        with self.db.session() as s:
            conn = s.connection()
            for start in range(0, len(uuids), 500):
                for row in conn.execute(
                    select(c.command_uuid, c.enrollment_id, c.status, c.not_now_count, c.error_chain).where(
                        c.command_uuid.in_(uuids[start : start + 500])
                    )
                ):
                    out.append(CommandState(*row))
        return out

    def pending_commands(self) -> dict[str, list[MDMCommand]]:
        """Commands not yet answered for good, by enrollment id (queued or NotNow)."""
        out: dict[str, list[MDMCommand]] = {}
        with self.db.session() as s:
            for c in s.scalars(select(MDMCommand).where(MDMCommand.status.in_(PENDING))):
                c.enqueued_at = _as_utc(c.enqueued_at)
                c.updated_at = _as_utc(c.updated_at)  # type: ignore[assignment]
                out.setdefault(c.enrollment_id, []).append(c)
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
        from sqlalchemy import func

        with self.db.session() as s:
            return {
                t.__tablename__: s.scalar(select(func.count()).select_from(t)) or 0
                for t in (MDMDevice, MDMDeviceFact, MDMCommand, MDMWebhookEvent)
            }


def decode_b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
