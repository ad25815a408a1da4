"""Web accounts: local users with argon2 password hashes, roles (admin; coordinator and teacher,
scoped to schools), login rate limiting per user and address, and the `Authenticator` seam that the
directory sign-in (enrolment.directory: LDAP/Active Directory) plugs into.

A coordinator sees and acts on their own schools only; a teacher only on the classes that name their
login (and no enrolment requests); an admin sees everything. The `Principal` handed to the rest of
the package carries exactly that.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core import audit
from core.alerts import raise_alert
from core.config import AlertsConfig
from core.db import Database
from enrolment.errors import AuthError, NotFound, RateLimited, RequestInputError
from enrolment.models import ROLES, LoginAttempt, User, UserSchool, WebSession

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH = 12
# Failed logins answer with a backoff per (user, address), never a lock: the first
# MAX_FAILED_LOGINS failures from one address cost nothing, each further one doubles the wait
# before that address may try that user again (15 s, 30 s, ... up to 15 minutes). Another address
# (the real teacher at school) is never slowed down by them, so nobody can lock a coordinator out
# by guessing their user name. Failures count until the pair's next successful login, for a day.
MAX_FAILED_LOGINS = 5
BACKOFF_FIRST = timedelta(seconds=15)
BACKOFF_MAX = timedelta(minutes=15)
BACKOFF_MEMORY = timedelta(days=1)
# Many failures for one account across addresses within ALERT_WINDOW are an attack from many
# addresses: IT is alerted once per window (core.alerts), the account stays usable.
ALERT_FAILURES = 20
ALERT_WINDOW = timedelta(minutes=15)

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verifying against this keeps a login for an unknown user as slow as one for a known user.
    Made on first use: an argon2 hash costs about 0.1 s, which every werne command paid at import."""
    return _hasher.hash("werne-dummy-password-for-timing")


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user name, a role and (for coordinators) the schools they may see."""

    username: str
    role: str
    schools: frozenset[str] = field(default_factory=frozenset)
    # A fingerprint of the credential the session was opened with: a password reset ends the
    # user's other sessions, because their fingerprint no longer matches.
    credential_tag: str = field(default="", compare=False, repr=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_teacher(self) -> bool:
        return self.role == "teacher"

    def may_see_school(self, school_id: str) -> bool:
        return self.is_admin or school_id in self.schools


def cli_principal(actor: str) -> Principal:
    """The CLI runs as IT staff on the server: an admin principal named after the OS user."""
    return Principal(username=actor, role="admin")


class Authenticator(Protocol):
    """Checks a user name and password; local accounts today, LDAP or Active Directory later."""

    def authenticate(self, username: str, password: str) -> Principal | None: ...


class LocalAuthenticator:
    """Local accounts in the state database, argon2id hashes."""

    def __init__(self, db: Database):
        self.db = db

    def authenticate(self, username: str, password: str) -> Principal | None:
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                _verify(_dummy_hash(), password)
                return None
            if not _verify(user.password_hash, password) or not user.active:
                return None
            if _hasher.check_needs_rehash(user.password_hash):
                user.password_hash = _hasher.hash(password)
            return Principal(user.username, user.role, frozenset(user.school_ids), credential_tag(user.password_hash))


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise RequestInputError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")


def add_user(
    db: Database,
    username: str,
    password: str,
    role: str,
    schools: list[str],
    known_schools: set[str],
    actor: str,
) -> Principal:
    """Create a local account. Coordinators need at least one known school; admins need none."""
    username = username.strip().lower()
    if not USERNAME_RE.match(username):
        raise RequestInputError(f"bad user name '{username}': lower-case letters, digits, '.', '_', '-'")
    if role not in ROLES:
        raise RequestInputError(f"unknown role '{role}' (known: {', '.join(ROLES)})")
    unknown = sorted(set(schools) - known_schools)
    if unknown:
        raise RequestInputError(f"unknown school(s): {', '.join(unknown)}")
    if role in ("coordinator", "teacher") and not schools:
        raise RequestInputError(f"a {role} needs at least one --school")
    _check_password(password)
    with db.session() as s:
        if s.scalar(select(User.id).where(User.username == username)) is not None:
            raise RequestInputError(f"user '{username}' already exists")
        user = User(username=username, password_hash=_hasher.hash(password), role=role, active=True)
        user.schools = [UserSchool(school_id=sc) for sc in sorted(set(schools))]
        s.add(user)
    audit.record(db, "user.add", username, {"role": role, "schools": sorted(set(schools))}, actor=actor)
    return Principal(username, role, frozenset(schools))


def set_active(db: Database, username: str, active: bool, actor: str) -> None:
    with db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"no such user: {username}")
        user.active = active
        if not active:
            s.execute(delete(WebSession).where(WebSession.username == username))
    audit.record(db, "user.enable" if active else "user.disable", username, actor=actor)


def reset_password(db: Database, username: str, password: str, actor: str) -> None:
    _check_password(password)
    with db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"no such user: {username}")
        user.password_hash = _hasher.hash(password)
        s.execute(delete(LoginAttempt).where(LoginAttempt.username == username, LoginAttempt.success.is_(False)))
        s.execute(delete(WebSession).where(WebSession.username == username))
    audit.record(db, "user.reset_password", username, actor=actor)


def list_users(db: Database) -> list[dict[str, object]]:
    with db.session() as s:
        return [
            {"username": u.username, "role": u.role, "active": u.active, "schools": u.school_ids}
            for u in s.scalars(select(User).order_by(User.username))
        ]


def backoff(failures: int) -> timedelta:
    """How long a (user, address) pair waits after its `failures`-th failure in a row."""
    if failures < MAX_FAILED_LOGINS:
        return timedelta(0)
    wait: timedelta = BACKOFF_FIRST * 2 ** (failures - MAX_FAILED_LOGINS)
    return min(wait, BACKOFF_MAX)


def _pair_failures(s: Session, username: str, address: str, now: datetime) -> tuple[int, datetime | None]:
    """Failures of this user from this address since its last success (within BACKOFF_MEMORY), and
    when the last one was."""
    last_ok = s.scalar(select(func.max(LoginAttempt.at)).where(
        LoginAttempt.username == username, LoginAttempt.address == address, LoginAttempt.success.is_(True)))
    since = max(last_ok or now - BACKOFF_MEMORY, now - BACKOFF_MEMORY)
    count, last = s.execute(select(func.count(LoginAttempt.id), func.max(LoginAttempt.at)).where(
        LoginAttempt.username == username, LoginAttempt.address == address, LoginAttempt.success.is_(False),
        LoginAttempt.at > since)).one()
    return int(count or 0), last


def login(
    db: Database,
    authenticator: Authenticator,
    username: str,
    password: str,
    address: str,
    now: datetime | None = None,
    alerts: AlertsConfig | None = None,
) -> Principal:
    """Check the password, with the backoff per (user, address). Raises RateLimited (with the
    seconds to wait) or AuthError; alerts IT (through `alerts`' channels too) when one account
    fails from many sides."""
    now = now or datetime.now(UTC)
    username = username.strip().lower()[:64]
    with db.session() as s:
        failures, last = _pair_failures(s, username, address, now)
    wait = backoff(failures)
    if last is not None and now < last + wait:
        raise RateLimited("too many failed logins; try again later", retry_after=last + wait - now)
    principal = authenticator.authenticate(username, password)
    with db.session() as s:
        s.add(LoginAttempt(username=username, address=address, at=now, success=principal is not None))
        # Keep the table small: attempts older than the backoff's memory carry no information.
        s.execute(delete(LoginAttempt).where(LoginAttempt.at < now - BACKOFF_MEMORY))
    if principal is None:
        _alert_if_attacked(db, username, now, alerts)
        raise AuthError("wrong user name or password")
    audit.record(db, "web.login", username, {"address": address}, actor=username)
    return principal


def _alert_if_attacked(db: Database, username: str, now: datetime, alerts: AlertsConfig | None) -> None:
    """Alert IT once per ALERT_WINDOW when `username` reached ALERT_FAILURES failures in it."""
    with db.session() as s:
        failures, addresses = s.execute(select(func.count(LoginAttempt.id), func.count(LoginAttempt.address.distinct()))
                                        .where(LoginAttempt.username == username, LoginAttempt.success.is_(False),
                                               LoginAttempt.at >= now - ALERT_WINDOW)).one()
    if failures != ALERT_FAILURES:
        return  # below the threshold, or alerted already when this window reached it
    raise_alert(db, "login_failures", username,
                f"{failures} failed logins for web account {username!r} from {addresses} address(es) in "
                f"{int(ALERT_WINDOW.total_seconds() // 60)} minutes (password guessing?); the account stays "
                "usable, each address waits longer after each failure",
                {"failures": failures, "addresses": addresses}, channels_cfg=alerts)


def unlock(db: Database, username: str, actor: str) -> int:
    """Forget the failed logins of `username` (every address): its backoff ends now. Returns how
    many were forgotten. Raises NotFound for an unknown account."""
    with db.session() as s:
        if s.scalar(select(User.id).where(User.username == username)) is None:
            raise NotFound(f"no such user: {username}")
        n = s.scalar(select(func.count(LoginAttempt.id)).where(LoginAttempt.username == username,
                                                               LoginAttempt.success.is_(False))) or 0
        s.execute(delete(LoginAttempt).where(LoginAttempt.username == username, LoginAttempt.success.is_(False)))
    audit.record(db, "user.unlock", username, {"failed_logins_forgotten": n}, actor=actor)
    return n


def credential_tag(password_hash: str) -> str:
    return hashlib.sha256(b"werne-session:" + password_hash.encode()).hexdigest()[:24]


def principal_for(db: Database, username: str, tag: str) -> Principal | None:
    """The current role and schools of an active user whose password is still the one the
    session was opened with (sessions re-check this on every request)."""
    with db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        if user is None or not user.active:
            return None
        current = credential_tag(user.password_hash)
        if not hmac.compare_digest(current, tag):
            return None
        return Principal(user.username, user.role, frozenset(user.school_ids), current)


# ---------------------------------------------------------------- server-side sessions --------
# The signed cookie proves who made it, not that the session is still open: a copy of a cookie
# saved before logout would otherwise work until it expires. The cookie carries a random id; the
# database keeps its SHA-256 while the session is open.


def _session_key(session_id: str) -> str:
    return hashlib.sha256(b"werne-web-session:" + session_id.encode()).hexdigest()


def open_session(db: Database, username: str, max_age_s: int, now: datetime | None = None) -> str:
    """Record a new session for `username`; returns its id (for the cookie). Drops expired ones."""
    now = now or datetime.now(UTC)
    session_id = secrets.token_urlsafe(32)
    with db.session() as s:
        s.execute(delete(WebSession).where(WebSession.expires_at < now))
        s.add(
            WebSession(
                id_hash=_session_key(session_id),
                username=username,
                created_at=now,
                expires_at=now + timedelta(seconds=max_age_s),
            )
        )
    return session_id


def session_open(db: Database, session_id: str, username: str, now: datetime | None = None) -> bool:
    """Whether the session is still open (not logged out, not expired) and belongs to `username`."""
    if not session_id:
        return False
    now = now or datetime.now(UTC)
    with db.session() as s:
        row = s.get(WebSession, _session_key(session_id))
        return row is not None and row.username == username and row.expires_at > now


def close_session(db: Database, session_id: str) -> None:
    """Log out: the session's row goes, so its cookie no longer opens anything."""
    if session_id:
        with db.session() as s:
            s.execute(delete(WebSession).where(WebSession.id_hash == _session_key(session_id)))
