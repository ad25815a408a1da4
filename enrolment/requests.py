"""Enrolment requests: create (pasted serials or an Apple School Manager CSV), list and show within
the caller's schools, approve (DEP assignment) or reject, and the status state machine.

    submitted -> approved -> assigned -> enrolled (n of m) -> configured -> done
              \\-> rejected          each serial may instead end as failed, with its reason

Every change is one database transaction, so a request is never half-created or half-approved.
Callers only ever learn about requests of schools they may see: anything else is `NotFound`,
with the same message as an id that does not exist.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.config import Config
from core.csvio import CSVFormatError, decode_csv_bytes, read_rows, write_csv
from core.db import Database
from core.findings import Findings
from core.inventory import IPAD_CSV_ALIASES, IPAD_GROUPS, SERIAL_RE, Inventory, normalise_serial
from core.text import one_line_problem
from enrolment import dep
from enrolment.accounts import Principal
from enrolment.errors import DEPUnavailable, InvalidTransition, NotAllowed, NotFound, RequestInputError
from enrolment.models import DEPProfile, EnrolmentRequest, RequestSerial
from mdm_client.factory import nanodep_client

MAX_SERIALS_PER_REQUEST = 2000
MAX_PURPOSE_LENGTH = 200
# Pasted serials: 2000 of them with separators take some 30,000 characters; far more is a mistake
# (a wrong clipboard), refused before it is parsed.
MAX_PASTED_LENGTH = 64 * 1024
# Request states in which its serials count as "taken": a second request for them is refused.
ACTIVE_STATES = ("submitted", "approved", "assigned", "enrolled", "configured")
# Serial states that mean the iPad is (or is about to be) managed.
LIVE_SERIAL_STATES = ("requested", "assigned", "enrolled", "configured")
_create_lock = threading.Lock()


@dataclass
class SerialView:
    """One serial of a request as the web page and the CLI show it."""

    serial: str
    status: str
    reason: str | None
    dep_status: str | None


@dataclass
class RequestView(Findings):
    """A request as the caller may see it."""

    id: int
    school_id: str
    group: str
    purpose: str
    status: str
    created_by: str
    created_at: datetime
    decided_by: str | None
    reason: str | None
    serials: list[SerialView] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.serials)

    @property
    def ok(self) -> bool:
        """No serial failed or is still waiting to be assigned (after an approval: a finding)."""
        return not any(s.status in ("failed", "requested") for s in self.serials)

    @property
    def enrolled(self) -> int:
        return sum(1 for s in self.serials if s.status in ("enrolled", "configured"))

    @property
    def configured(self) -> int:
        return sum(1 for s in self.serials if s.status == "configured")

    @property
    def failed(self) -> int:
        return sum(1 for s in self.serials if s.status == "failed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "school": self.school_id,
            "group": self.group,
            "purpose": self.purpose,
            "status": self.status,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "decided_by": self.decided_by,
            "reason": self.reason,
            "enrolled": self.enrolled,
            "configured": self.configured,
            "total": self.total,
            "serials": [s.__dict__ for s in self.serials],
        }


def _view(r: EnrolmentRequest) -> RequestView:
    return RequestView(
        r.id,
        r.school_id,
        r.device_group,
        r.purpose,
        r.status,
        r.created_by,
        r.created_at,
        r.decided_by,
        r.reason,
        [SerialView(s.serial, s.status, s.reason, s.dep_status) for s in r.serials],
    )


# ---------------------------------------------------------------- parsing -------------------

_SPLIT_RE = re.compile(r"[\s,;]+")


def parse_pasted_serials(text: str) -> tuple[list[str], list[str]]:
    """Serials from pasted text (one per line, or separated by spaces, commas or semicolons)."""
    serials, problems = [], []
    for token in _SPLIT_RE.split(text or ""):
        if not token.strip():
            continue
        s = normalise_serial(token)
        if SERIAL_RE.match(s):
            serials.append(s)
        else:
            problems.append(f"bad serial format '{token.strip()[:20]}' (10-12 letters and digits)")
    return serials, problems


def parse_uploaded_serials(raw: bytes, filename: str, school_id: str) -> tuple[list[str], list[str]]:
    """Serials from an Apple School Manager CSV export (UTF-8 with or without BOM, `,` or `;`)."""
    name = (filename or "upload.csv").rsplit("/", 1)[-1][:80]
    try:
        rows = read_rows(decode_csv_bytes(raw, name), name, IPAD_CSV_ALIASES, {"serial"})
    except CSVFormatError as e:
        return [], [str(e)]
    if not rows:
        return [], [f"{name}: the file has a header but no serial numbers"]
    serials, problems = [], []
    for line, row in rows:
        s = normalise_serial(row.get("serial", ""))
        if not SERIAL_RE.match(s):
            problems.append(
                f"{name}:{line}: bad serial format '{row.get('serial', '')[:20]}' (10-12 letters and digits)"
            )
            continue
        # An export filtered for another location is a mistake; say which line, never whose.
        if row.get("school") and row["school"].strip().lower() != school_id:
            problems.append(f"{name}:{line}: {s}: the location column does not name this school")
            continue
        serials.append(s)
    return serials, problems


# ---------------------------------------------------------------- create ---------------------


def _purpose_problems(purpose: str) -> list[str]:
    """What is wrong with a request's purpose (one line of text, not empty, not too long)."""
    if not purpose:
        return ["purpose or class is missing"]
    if len(purpose) > MAX_PURPOSE_LENGTH:
        return [f"purpose is longer than {MAX_PURPOSE_LENGTH} characters"]
    not_one_line = one_line_problem(purpose, "purpose")
    return [not_one_line] if not_one_line is not None else []


def create_request(
    db: Database,
    inventory: Inventory,
    principal: Principal,
    school_id: str,
    group: str,
    purpose: str,
    pasted: str = "",
    upload: bytes | None = None,
    upload_name: str = "",
    managed_serials: set[str] | None = None,
) -> RequestView:
    """Validate everything, then store the request and its serials in one transaction.

    `managed_serials`: serials already enrolled in the MDM (from its registry), if known.
    Raises RequestInputError listing every problem; nothing is stored then.
    """
    if school_id not in inventory.schools or not principal.may_see_school(school_id):
        raise NotFound(f"unknown school: {school_id[:32]}")
    problems: list[str] = []
    if group not in IPAD_GROUPS:
        problems.append(f"unknown group '{group[:20]}' (pupil, teacher or shared)")
    purpose = (purpose or "").strip()
    problems += _purpose_problems(purpose)
    serials: list[str] = []
    if len(pasted) > MAX_PASTED_LENGTH:
        problems.append(f"the pasted serial numbers are longer than {MAX_PASTED_LENGTH} characters "
                        f"(at most {MAX_SERIALS_PER_REQUEST} serials per request)")
    elif pasted.strip():
        got, bad = parse_pasted_serials(pasted)
        serials += got
        problems += bad
    if upload is not None:
        got, bad = parse_uploaded_serials(upload, upload_name, school_id)
        serials += got
        problems += bad
    if not serials and not problems:
        problems.append("no serial numbers: paste them or upload an Apple School Manager CSV export")
    if len(serials) > MAX_SERIALS_PER_REQUEST:
        problems.append(f"more than {MAX_SERIALS_PER_REQUEST} serials in one request")
    seen: set[str] = set()
    for serial in serials:
        if serial in seen:
            problems.append(f"duplicate serial {serial} in this request")
        seen.add(serial)
    managed = set(managed_serials or set())
    # Check-then-insert must not interleave with another request for the same serials (two
    # coordinators submitting at once); the web app is one process, so a lock is enough.
    with _create_lock, db.session() as s:
        # One query per 500 serials, not per serial: an ASM export can hold thousands.
        ordered = sorted(seen)
        taken: dict[str, tuple[int, str]] = {}
        for start in range(0, len(ordered), 500):
            for row in s.execute(
                select(RequestSerial.serial, EnrolmentRequest.id, EnrolmentRequest.school_id)
                .join(RequestSerial, RequestSerial.request_id == EnrolmentRequest.id)
                .where(
                    RequestSerial.serial.in_(ordered[start : start + 500]),
                    EnrolmentRequest.status.in_(ACTIVE_STATES),
                    RequestSerial.status.in_(LIVE_SERIAL_STATES),
                )
            ):
                taken.setdefault(row.serial, (row.id, row.school_id))
        for serial in ordered:
            if serial in inventory.appletvs:
                problems.append(f"serial {serial} is an Apple TV: IT enrols Apple TVs (werne appletv assign)")
            elif serial in inventory.ipads or serial in managed:
                # Do not say whose device it is: it may belong to another school.
                problems.append(f"serial {serial} is already enrolled")
            elif serial in taken:
                rid, other_school = taken[serial]
                if principal.may_see_school(other_school):
                    problems.append(f"serial {serial} is already in request #{rid}")
                else:
                    problems.append(f"serial {serial} is already requested by another school")
        if problems:
            raise RequestInputError(problems)
        now = datetime.now(UTC)
        req = EnrolmentRequest(
            school_id=school_id,
            device_group=group,
            purpose=purpose,
            status="submitted",
            created_by=principal.username,
            created_at=now,
            updated_at=now,
        )
        req.serials = [
            RequestSerial(serial=x, status="requested", updated_at=now, pending_commands=[]) for x in serials
        ]
        s.add(req)
        s.flush()
        view = _view(req)
    audit.record(
        db,
        "enrol.request",
        f"request:{view.id}",
        {"school": school_id, "group": group, "purpose": purpose, "serials": serials},
        actor=principal.username,
    )
    return view


# ---------------------------------------------------------------- read -----------------------


def _load(s: Session, principal: Principal, request_id: int) -> EnrolmentRequest:
    req = s.get(EnrolmentRequest, request_id)
    if req is None or not principal.may_see_school(req.school_id):
        raise NotFound(f"no such request: {request_id}")
    return req


def list_requests(
    db: Database, principal: Principal, include_done: bool = True, status: str | None = None
) -> list[RequestView]:
    with db.session() as s:
        q = select(EnrolmentRequest).order_by(EnrolmentRequest.id.desc())
        if not principal.is_admin:
            q = q.where(EnrolmentRequest.school_id.in_(sorted(principal.schools)))
        if status:
            q = q.where(EnrolmentRequest.status == status)
        elif not include_done:
            q = q.where(EnrolmentRequest.status.not_in(("done", "rejected")))
        return [_view(r) for r in s.scalars(q)]


def get_request(db: Database, principal: Principal, request_id: int) -> RequestView:
    with db.session() as s:
        return _view(_load(s, principal, request_id))


def export_request_csv(db: Database, principal: Principal, request_id: int) -> str:
    """The request's serials as CSV for Excel; cells that start a formula are neutralised."""
    view = get_request(db, principal, request_id)
    rows: list[list[object]] = [["serial", "status", "reason", "school", "group", "purpose"]]
    rows += [[s.serial, s.status, s.reason or "", view.school_id, view.group, view.purpose] for s in view.serials]
    return write_csv(rows)


# ---------------------------------------------------------------- state machine -------------


def recompute_status(req: EnrolmentRequest) -> str:
    """The request's status from its serials, once it has been approved."""
    if req.status in ("submitted", "rejected", "done"):
        return req.status
    live = [s for s in req.serials if s.status not in ("failed", "rejected")]
    if not live:
        return "failed"
    if all(s.status == "configured" for s in live):
        return "configured"
    if any(s.status in ("enrolled", "configured") for s in live):
        return "enrolled"
    if any(s.status == "assigned" for s in live):
        return "assigned"
    return "approved"


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise NotAllowed("only IT staff can approve or reject requests")


def reject_request(db: Database, principal: Principal, request_id: int, reason: str) -> RequestView:
    _require_admin(principal)
    reason = (reason or "").strip()
    if not reason:
        raise RequestInputError("a rejection needs a reason (--reason)")
    if (bad := one_line_problem(reason, "reason")) is not None:
        raise RequestInputError(bad)
    with db.session() as s:
        req = _load(s, principal, request_id)
        if req.status != "submitted":
            raise InvalidTransition(f"request {request_id} is {req.status}; only submitted requests can be rejected")
        now = datetime.now(UTC)
        req.status, req.reason, req.decided_by, req.decided_at, req.updated_at = (
            "rejected",
            reason[:500],
            principal.username,
            now,
            now,
        )
        for x in req.serials:
            x.status, x.updated_at = "rejected", now
        view = _view(req)
    audit.record(db, "enrol.reject", f"request:{request_id}", {"reason": reason[:500]}, actor=principal.username)
    return view


def ensure_dep_profile(
    db: Database, client: dep.NanoDEPClient, cfg: Config, inventory: Inventory, school_id: str, actor: str,
    platform: str = "iOS",
) -> str:
    """The profile UUID for this school's current profile body (the iPads', or with platform "tvOS"
    the Apple TVs'); defines it at Apple if new."""
    template = (dep.load_profile_template(cfg.dep.profile_file) if platform == "iOS"
                else dep.load_profile_template(dep.TVOS_PROFILE_FILE, "tvOS"))
    body = dep.build_profile(template, inventory.schools[school_id], cfg.dep.enrol_url)
    digest = dep.profile_digest(body)
    with db.session() as s:
        known = s.scalar(select(DEPProfile).where(DEPProfile.school_id == school_id, DEPProfile.digest == digest))
        if known is not None:
            return known.profile_uuid
    uuid = client.define_profile(body)
    with db.session() as s:
        s.add(DEPProfile(school_id=school_id, digest=digest, profile_uuid=uuid, body=body))
    audit.record(db, "dep.define_profile", f"school:{school_id}", {"profile_uuid": uuid, "digest": digest}, actor=actor)
    return uuid


def approve_request(
    db: Database,
    cfg: Config,
    inventory: Inventory,
    principal: Principal,
    request_id: int,
    client: dep.NanoDEPClient | None = None,
    sleep: Callable[[float], None] | None = None,
) -> RequestView:
    """Approve a submitted request (or retry the still-unassigned serials of an approved one):
    define the school's DEP profile if needed, assign the serials through NanoDEP, and store the
    approval and every per-serial outcome in one transaction. If NanoDEP or Apple cannot be
    reached, nothing is stored and the request stays as it was."""
    _require_admin(principal)
    with db.session() as s:
        req = _load(s, principal, request_id)
        if req.status not in ("submitted", "approved", "assigned", "enrolled"):
            raise InvalidTransition(f"request {request_id} is {req.status}; it cannot be approved")
        todo = [x.serial for x in req.serials if x.status == "requested"]
        school_id = req.school_id
        first_approval = req.status == "submitted"
    if not todo:
        raise InvalidTransition(f"request {request_id} has no serials left to assign")
    if school_id not in inventory.schools:
        raise RequestInputError(f"request {request_id}: school '{school_id}' is no longer in the inventory")
    client = client or nanodep_client(cfg)
    kwargs: dict[str, Any] = {
        "max_attempts": cfg.dep.max_assign_attempts,
        "max_wait_s": cfg.dep.max_retry_wait_s,
    }
    if sleep is not None:
        kwargs["sleep"] = sleep
    try:
        uuid = ensure_dep_profile(db, client, cfg, inventory, school_id, principal.username)
        result = dep.assign_with_retries(client, uuid, todo, **kwargs)
    except DEPUnavailable as e:
        audit.record(db, "enrol.approve_failed", f"request:{request_id}", {"error": str(e)}, actor=principal.username)
        raise
    now = datetime.now(UTC)
    with db.session() as s:
        req = _load(s, principal, request_id)
        if first_approval:
            req.decided_by, req.decided_at = principal.username, now
        req.profile_uuid = uuid
        req.status = "approved" if req.status == "submitted" else req.status
        for x in req.serials:
            out = result.outcomes.get(x.serial)
            if out is None or x.status != "requested":
                continue
            x.dep_status, x.reason, x.updated_at = out.status, out.reason, now
            if out.status == "SUCCESS":
                x.status = "assigned"
            elif out.status in ("NOT_ACCESSIBLE", "FAILED"):
                x.status = "failed"
            # THROTTLED stays "requested": the next `werne enrol approve` retries it.
        req.status = recompute_status(req)
        req.updated_at = now
        view = _view(req)
    audit.record(
        db,
        "enrol.approve" if first_approval else "enrol.approve_retry",
        f"request:{request_id}",
        {
            "profile_uuid": uuid,
            "calls": result.calls,
            "outcomes": {k: v.status for k, v in result.outcomes.items()},
        },
        actor=principal.username,
    )
    audit.record(
        db,
        "dep.assign_profile",
        f"request:{request_id}",
        {
            "profile_uuid": uuid,
            "serials": todo,
            "outcomes": {k: v.status for k, v in result.outcomes.items()},
        },
        actor=principal.username,
    )
    return view


def close_request(db: Database, principal: Principal, request_id: int) -> RequestView:
    """configured -> done: IT confirms the school has its iPads; the request leaves the open list."""
    _require_admin(principal)
    with db.session() as s:
        req = _load(s, principal, request_id)
        if req.status not in ("configured", "failed"):
            raise InvalidTransition(f"request {request_id} is {req.status}; only configured requests can be closed")
        req.status, req.updated_at = "done", datetime.now(UTC)
        view = _view(req)
    audit.record(db, "enrol.close", f"request:{request_id}", {}, actor=principal.username)
    return view
