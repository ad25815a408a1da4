"""The queue of work that waits for a laptop to come online: a provisioning run it missed, a VPN
key rotation. One open item per laptop and kind; an item is `done` only after its work succeeded.

States: pending -> running (claimed by one watcher process) -> done, or back to pending with a
back-off (laptop gone, lock held), or failed after `max_attempts`. A watcher killed while an item
was running leaves it `running` with its pid; the next watcher finds that process gone and puts
the item back to pending (`release_stale`), so it is applied again, once, and recorded once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import overload

from sqlalchemy import CursorResult, select, update

from core.db import Database
from core.inventory import Inventory
from core.procs import pid_alive, proc_state
from provisioning.errors import ProvisioningError
from provisioning.home.models import (
    KINDS,
    OPEN_STATES,
    STATE_DONE,
    STATE_FAILED,
    STATE_PENDING,
    STATE_RUNNING,
    PendingWork,
)


class PendingInputError(ProvisioningError):
    """A pending item was asked for with a kind werne does not know."""

    exit_code = 2


@dataclass(frozen=True)
class PendingItem:
    """One item of the queue as the CLI lists it."""

    id: int
    host: str
    kind: str
    state: str
    created_at: datetime
    created_by: str
    reason: str
    attempts: int
    not_before: datetime | None
    last_error: str | None
    done_at: datetime | None
    result: str | None
    # The laptop's pinned host key(s) when the item was made (lock, erase, unlock; else None).
    identity: str | None = None

    def to_dict(self) -> dict[str, object]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {"id": self.id, "host": self.host, "kind": self.kind, "state": self.state,
                "created_at": iso(self.created_at), "created_by": self.created_by, "reason": self.reason,
                "attempts": self.attempts, "not_before": iso(self.not_before), "last_error": self.last_error,
                "done_at": iso(self.done_at), "result": self.result, "identity": self.identity}


@overload
def _utc(d: datetime) -> datetime: ...
@overload
def _utc(d: None) -> None: ...
@overload
def _utc(d: datetime | None) -> datetime | None: ...
def _utc(d: datetime | None) -> datetime | None:
    return d if d is None or d.tzinfo else d.replace(tzinfo=UTC)


def _item(r: PendingWork) -> PendingItem:
    return PendingItem(r.id, r.host, r.kind, r.state, _utc(r.created_at), r.created_by,
                       r.reason, r.attempts, _utc(r.not_before), r.last_error, _utc(r.done_at), r.result, r.identity)


def owner_id(pid: int | None = None) -> str:
    """This process as a claimer: "pid:start-ticks" (a reused pid does not look alive)."""
    pid = pid or os.getpid()
    state = proc_state(pid)
    return f"{pid}:{state[1] if state else None}"


def owner_alive(owner: str | None) -> bool:
    """Whether the claimer `owner` (an owner_id) still runs: same pid, same start, not a zombie."""
    if not owner or ":" not in owner:
        return False
    pid_s, start_s = owner.split(":", 1)
    try:
        pid, start = int(pid_s), int(start_s)
    except ValueError:
        return False
    return pid_alive(pid, start=start)


def enqueue(db: Database, host: str, kind: str, actor: str, reason: str = "",
            now: datetime | None = None, identity: str | None = None) -> tuple[PendingItem, bool]:
    """Queue `kind` for `host`; (item, created). An open item of the same kind is reused, not doubled.
    `identity` (lock, erase, unlock) names the laptop by its pinned host key(s)."""
    if kind not in KINDS:
        raise PendingInputError(f"unknown pending kind {kind!r} (known: {', '.join(KINDS)})")
    with db.session() as s:
        have = s.scalars(select(PendingWork).where(
            PendingWork.host == host, PendingWork.kind == kind, PendingWork.state.in_(OPEN_STATES))).first()
        if have is not None:
            return _item(have), False
        row = PendingWork(host=host, kind=kind, state=STATE_PENDING, created_at=now or datetime.now(UTC),
                          created_by=actor, reason=reason, attempts=0, identity=identity)
        s.add(row)
        s.flush()
        return _item(row), True


def list_items(db: Database, hosts: list[str] | None = None, include_closed: bool = False) -> list[PendingItem]:
    """Items by host and id; open ones only unless include_closed."""
    with db.session() as s:
        q = select(PendingWork)
        if not include_closed:
            q = q.where(PendingWork.state.in_(OPEN_STATES))
        if hosts is not None:
            q = q.where(PendingWork.host.in_(hosts))
        return [_item(r) for r in s.scalars(q.order_by(PendingWork.host, PendingWork.id)).all()]


def due(db: Database, hosts: list[str], now: datetime) -> list[PendingItem]:
    """Pending items of these hosts whose back-off has passed."""
    return [i for i in list_items(db, hosts) if i.state == STATE_PENDING
            and (i.not_before is None or i.not_before <= now)]


def claim(db: Database, ids: list[int], owner: str, now: datetime) -> list[int]:
    """Mark pending items running for `owner`; returns the ids this call got (another watcher
    may have taken some first: the UPDATE only matches items still pending)."""
    got = []
    with db.session() as s:
        for i in ids:
            res = s.execute(update(PendingWork).where(PendingWork.id == i, PendingWork.state == STATE_PENDING)
                            .values(state=STATE_RUNNING, claimed_by=owner, last_attempt_at=now,
                                    attempts=PendingWork.attempts + 1))
            assert isinstance(res, CursorResult)  # an UPDATE's result; Session.execute is typed for any statement
            if res.rowcount:
                got.append(i)
    return got


def mark_done(db: Database, item_id: int, result: str, now: datetime) -> None:
    with db.session() as s:
        s.execute(update(PendingWork).where(PendingWork.id == item_id, PendingWork.state == STATE_RUNNING)
                  .values(state=STATE_DONE, done_at=now, result=result, claimed_by=None, last_error=None))


def mark_retry(db: Database, item_id: int, error: str, now: datetime, *, base_s: float, max_s: float,
               max_attempts: int, counts: bool = True) -> str:
    """Back to pending with a doubling back-off, or failed after max_attempts; returns the new state.
    `counts=False` (the lock was held, nothing was tried) does not use up an attempt."""
    with db.session() as s:
        row = s.get(PendingWork, item_id)
        if row is None or row.state != STATE_RUNNING:
            return row.state if row else "gone"
        if not counts:
            row.attempts = max(0, row.attempts - 1)
        row.claimed_by = None
        row.last_error = error[:2000]
        if row.attempts >= max_attempts:
            row.state = STATE_FAILED
        else:
            row.state = STATE_PENDING
            row.not_before = now + timedelta(seconds=min(max_s, base_s * 2 ** max(0, row.attempts - 1)))
        return row.state


def release_stale(db: Database, alive: object = owner_alive) -> list[int]:
    """Items left `running` by a watcher that no longer runs go back to pending at once."""
    check = alive if callable(alive) else owner_alive
    out = []
    with db.session() as s:
        for row in s.scalars(select(PendingWork).where(PendingWork.state == STATE_RUNNING)).all():
            if not check(row.claimed_by):
                row.state = STATE_PENDING
                row.last_error = f"the watcher ({row.claimed_by}) stopped while applying it; not recorded as done"
                row.claimed_by = None
                row.not_before = None
                out.append(row.id)
    return out


def queue_for_later(db: Database, inventory: Inventory, kind: str, actor: str, unreachable: dict[str, str],
                    origin: str, applies: str) -> dict[str, str]:
    """Queue `kind` for the home-office laptops among `unreachable` (host -> why it was not reached);
    returns host -> the reason to show instead ("off or away …: queued as pending item N; …").
    Office laptops are left out: for them unreachable stays a failure."""
    out = {}
    for host, why in unreachable.items():
        lap = inventory.laptops.get(host)
        if lap is None or not lap.home_office:
            continue
        item, _ = enqueue(db, host, kind, actor, f"{origin}: {why}")
        out[host] = (f"off or away ({why}): queued as pending item {item.id}; "
                     f"`werne laptop watch` {applies} when the laptop comes online")
    return out

