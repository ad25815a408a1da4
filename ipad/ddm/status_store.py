"""What the nightly run merged of each iPad's declarative status, kept between nights (table
ipad_ddm_status), so that the next read of KMFDDM only takes the reports that came since
(ipad.ddm.status, O(changes)). A cache: a lost or wrong row costs one full read, never a wrong fact,
because a row is only used when its newest report is still among KMFDDM's reports."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from core.db import Database, in_chunks
from core.models import utcnow
from ipad.ddm.status import DDMStatus
from ipad.models import DDMStatusRead


def _when(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def load_known(db: Database, enrollment_ids: Iterable[str]) -> dict[str, DDMStatus]:
    """The statuses merged before, by enrolment id (those never read are absent)."""
    ids = list(dict.fromkeys(enrollment_ids))
    out: dict[str, DDMStatus] = {}
    with db.session() as s:
        for chunk in in_chunks(ids):
            for row in s.scalars(select(DDMStatusRead).where(DDMStatusRead.enrollment_id.in_(chunk))):
                out[row.enrollment_id] = DDMStatus(
                    row.enrollment_id, reported_at=row.reported_at, items=dict(row.items or {}),
                    item_times={k: _when(v) for k, v in (row.item_times or {}).items()}, newest=row.newest)
    return out


def save_known(db: Database, statuses: dict[str, DDMStatus]) -> None:
    """Keep this read's statuses for the next one (one row per enrolment, replaced)."""
    rows = [
        DDMStatusRead(enrollment_id=eid, newest=st.newest, reported_at=st.reported_at, items=st.items,
                      item_times={k: v.isoformat() if v else None for k, v in st.item_times.items()}, read_at=utcnow())
        for eid, st in statuses.items() if st.newest
    ]
    if not rows:
        return
    ids = [r.enrollment_id for r in rows]
    with db.session() as s:
        for chunk in in_chunks(ids):
            s.execute(delete(DDMStatusRead).where(DDMStatusRead.enrollment_id.in_(chunk)))
        s.add_all(rows)
