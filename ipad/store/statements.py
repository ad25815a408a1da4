"""The registry's SQL, built once: a batch runs the same few statements for thousands of rows, and
core.db.bulk_execute keeps its compiled plans per statement object."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, bindparam, case, func, insert, literal_column, select, update

from core.db import upsert
from ipad.models import MDMCommand, MDMDevice, MDMDeviceFact, MDMWebhookEvent

# Declarative models type __table__ as a FromClause; these are Tables (what insert/update take).
DEVICES: Table = MDMDevice.__table__  # type: ignore[assignment]
COMMANDS: Table = MDMCommand.__table__  # type: ignore[assignment]
EVENTS: Table = MDMWebhookEvent.__table__  # type: ignore[assignment]
FACTS: Table = MDMDeviceFact.__table__  # type: ignore[assignment]
# Kinds of fact that hold a check-in's time rather than an answer.
CHECKIN_FACT_PREFIX = "_checkin."

INSERT_EVENT = insert(EVENTS)
INSERT_DEVICE = insert(DEVICES)
# The batch's lookups (SQLAlchemy compiles each once per list length).
SELECT_KNOWN_EVENTS = select(EVENTS.c.event_id).where(EVENTS.c.event_id.in_(bindparam("ids", expanding=True)))
SELECT_DEVICES = select(DEVICES).where(DEVICES.c.enrollment_id.in_(bindparam("ids", expanding=True)))
SELECT_CHECKIN_TIMES = select(FACTS.c.enrollment_id, FACTS.c.kind, FACTS.c.value).where(
    FACTS.c.enrollment_id.in_(bindparam("ids", expanding=True)), FACTS.c.kind.like(CHECKIN_FACT_PREFIX + "%")
)
# Every device column a new row needs in the executemany (which wants the same keys in every row).
NEW_DEVICE_BLANK: dict[str, Any] = {c.key: None for c in DEVICES.columns if c.key != "id"}

_DEVICE_UPDATES: dict[frozenset[str], Any] = {}


def device_columns(values: dict[str, Any]) -> dict[str, Any]:
    """ORM attribute names to column names (only `group` differs: the column is ipad_group)."""
    return {("ipad_group" if k == "group" else k): v for k, v in values.items()}


def update_devices(columns: frozenset[str]) -> Any:
    """UPDATE mdm_devices SET each column = :b_<column> WHERE enrollment_id = :b_eid, for executemany.

    Built once per column set, so SQLAlchemy compiles it once (per-row ORM updates cost ~10x more).
    """
    stmt = _DEVICE_UPDATES.get(columns)
    if stmt is None:
        stmt = (
            update(DEVICES)
            .where(DEVICES.c.enrollment_id == bindparam("b_eid"))
            .values({k: bindparam(f"b_{k}") for k in sorted(columns)})
        )
        _DEVICE_UPDATES[columns] = stmt
    return stmt


def upsert_facts(dialect: str) -> Any:
    """INSERT a fact ... ON CONFLICT (enrollment_id, kind) DO UPDATE: the newest answer replaces the old."""
    return upsert(FACTS, dialect, ("enrollment_id", "kind"), ("at", "command_uuid", "value"))


def _answer_into_recorded(new: Any) -> dict[str, Any]:
    """The SET clause of upsert_command_results (see there)."""
    old = COMMANDS.c
    not_now = new.status == literal_column("'NotNow'")
    return {
        "status": new.status,
        "updated_at": new.updated_at,
        "not_now_count": func.coalesce(old.not_now_count, literal_column("0")) + new.not_now_count,
        "error_chain": case((not_now, old.error_chain), else_=new.error_chain),
        "result": case((not_now, old.result), else_=new.result),
        # The answer's own request type wins: a reused CommandUUID keeps its type and result together.
        "request_type": case((new.request_type == literal_column("''"), old.request_type), else_=new.request_type),
    }


def upsert_command_results(dialect: str) -> Any:
    """INSERT a command result ... ON CONFLICT (command_uuid, enrollment_id) DO UPDATE.

    A row that `werne ipad` recorded when it enqueued the command (status queued, actor, detail)
    keeps those; the answer sets status and time, adds its NotNow count, and replaces the error
    chain and result unless it is a NotNow (which carries neither); the answer's request type, when
    it has one, replaces the row's (so type and result always belong together).
    """
    return upsert(COMMANDS, dialect, ("command_uuid", "enrollment_id"), _answer_into_recorded)
