"""Web accounts: local users with argon2 password hashes, roles (admin, coordinator scoped to
schools), login rate limiting per user and address, and the `Authenticator` seam for LDAP/AD.

A coordinator sees and acts on their own schools only; an admin sees everything. The
`Principal` handed to the rest of the package carries exactly that.
"""

from __future__ import annotations

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

from core import audit
from core.db import Database
from enrolment.errors import AuthError, NotFound, RateLimited, RequestInputError
from enrolment.models import ROLES, LoginAttempt, User, UserSchool, WebSession

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH = 12
# Five failed logins for one user from one address within 15 minutes lock that pair for the
# rest of the window; other addresses (the real teacher at school) are not locked out.
MAX_FAILED_LOGINS = 5
LOGIN_WINDOW = timedelta(minutes=15)
# Across all addresses, one account takes at most this many failures per window: an attacker
# with many addresses (or, before web.trusted_proxies, a forged X-Forwarded-For) cannot go on
# guessing. The price is that such an attack locks the real user out for the window, too.
MAX_FAILED_LOGINS_PER_USER = 20

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown user as slow as one for a known user.
_DUMMY_HASH = _hasher.hash("werne-dummy-password-for-timing")


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
                _verify(_DUMMY_HASH, password)
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
    if role == "coordinator" and not schools:
        raise RequestInputError("a coordinator needs at least one --school")
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


def login(
    db: Database,
    authenticator: Authenticator,
    username: str,
    password: str,
    address: str,
    now: datetime | None = None,
) -> Principal:
    """Check the password, counting failures per (user, address). Raises RateLimited or AuthError."""
    now = now or datetime.now(UTC)
    username = username.strip().lower()[:64]
    with db.session() as s:
        failures = (
            s.scalar(
                select(func.count(LoginAttempt.id)).where(
                    LoginAttempt.username == username,
                    LoginAttempt.address == address,
                    LoginAttempt.success.is_(False),
                    LoginAttempt.at >= now - LOGIN_WINDOW,
                )
            )
            or 0
        )
        failures_everywhere = (
            s.scalar(
                select(func.count(LoginAttempt.id)).where(
                    LoginAttempt.username == username,
                    LoginAttempt.success.is_(False),
                    LoginAttempt.at >= now - LOGIN_WINDOW,
                )
            )
            or 0
        )
    if failures >= MAX_FAILED_LOGINS or failures_everywhere >= MAX_FAILED_LOGINS_PER_USER:
        raise RateLimited("too many failed logins; try again in 15 minutes")
    principal = authenticator.authenticate(username, password)
    with db.session() as s:
        s.add(LoginAttempt(username=username, address=address, at=now, success=principal is not None))
        # Keep the table small: attempts older than a day carry no information.
        s.execute(delete(LoginAttempt).where(LoginAttempt.at < now - timedelta(days=1)))
    if principal is None:
        raise AuthError("wrong user name or password")
    audit.record(db, "web.login", username, {"address": address}, actor=username)
    return principal


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
