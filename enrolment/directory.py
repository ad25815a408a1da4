"""Sign-in through the city's directory: an LDAP or Active Directory bind with the user's own name
and password (ldap3), then the user's groups, mapped to a role and schools by [web.ldap] groups.

Hundreds of teachers cannot each get a local account from IT; the directory already knows them and
their school's groups. Local accounts stay: for IT, and as the fallback when the directory cannot be
reached. A directory user gets a shadow row in enrol_users (no password: "!directory"), refreshed at
each sign-in, so the web sessions, `werne user list` and `werne user disable` work for them as for
local users; a disabled shadow row refuses the sign-in whatever the directory says.

    AuthError       wrong name or password, or no group of the directory maps to a role (exit 2)
    DirectoryError  the directory cannot be reached or misbehaves: the local accounts are tried
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from sqlalchemy import select

from core import audit
from core.config import DirectoryGroup, LDAPConfig
from core.db import Database
from enrolment.accounts import Authenticator, Principal, credential_tag
from enrolment.errors import EnrolmentError
from enrolment.models import User, UserSchool

log = logging.getLogger("werne.enrolment.directory")

DIRECTORY_HASH = "!directory"
ROLE_RANK = {"teacher": 1, "coordinator": 2, "admin": 3}


class DirectoryError(EnrolmentError):
    """The directory cannot be reached or answered something unusable."""


@dataclass(frozen=True)
class DirectoryUser:
    """What the directory said about a user who signed in."""

    username: str
    groups: frozenset[str]


def map_groups(groups: frozenset[str], mapping: list[DirectoryGroup], known_schools: set[str]
               ) -> tuple[str, frozenset[str]] | None:
    """The highest role any of the user's groups gives, with the schools of that role's groups;
    None when no group maps (the user may not use the page)."""
    matched = [m for m in mapping if m.group.lower() in {g.lower() for g in groups}]
    if not matched:
        return None
    role = max((m.role for m in matched), key=lambda r: ROLE_RANK[r])
    schools = frozenset(s for m in matched if m.role == role for s in m.schools if s in known_schools)
    if role != "admin" and not schools:
        return None
    return role, schools


class LDAPAuthenticator:
    """Binds as the user; reads the user's groups with the same connection."""

    def __init__(self, cfg: LDAPConfig):
        self.cfg = cfg

    def _server(self) -> object:
        import ldap3  # lazy: only a site that signs in through a directory needs it

        tls = None
        if self.cfg.url.startswith("ldaps://") or self.cfg.start_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                            ca_certs_file=str(self.cfg.ca_file) if self.cfg.ca_file else None)
        return ldap3.Server(self.cfg.url, connect_timeout=self.cfg.timeout_s, tls=tls, get_info=ldap3.NONE)

    def lookup(self, username: str, password: str) -> DirectoryUser | None:
        """The user's groups if the bind with this name and password works; None if it does not."""
        import ldap3
        from ldap3.core import exceptions as ldap_errors
        from ldap3.utils.conv import escape_filter_chars
        from ldap3.utils.dn import escape_rdn

        if not password or not username:
            return None  # an empty password would be an anonymous bind, which "succeeds"
        user_dn = self.cfg.user_dn.format(username=escape_rdn(username))
        conn = ldap3.Connection(self._server(), user=user_dn, password=password, auto_bind=ldap3.AUTO_BIND_NONE,
                                # ldap3 packs it into SO_RCVTIMEO as whole seconds
                                receive_timeout=max(1, int(self.cfg.timeout_s)), raise_exceptions=False,
                                read_only=True)
        try:
            if self.cfg.start_tls and self.cfg.url.startswith("ldap://") and not conn.start_tls():
                raise DirectoryError(f"{self.cfg.url}: StartTLS failed")
            if not conn.bind():
                if conn.result.get("result") == 49:  # invalidCredentials
                    return None
                raise DirectoryError(f"{self.cfg.url}: bind failed: {conn.result.get('description', '?')}")
            conn.search(self.cfg.group_base, self.cfg.group_filter.format(user_dn=escape_filter_chars(user_dn)),
                        attributes=["cn"], size_limit=500, time_limit=int(self.cfg.timeout_s))
            groups = frozenset(str(e.entry_attributes_as_dict.get("cn", [""])[0]) for e in conn.entries)
        except ldap_errors.LDAPException as e:
            raise DirectoryError(f"{self.cfg.url}: {e.__class__.__name__}") from None
        finally:
            try:
                conn.unbind()  # closes the socket, bound or not
            except ldap_errors.LDAPException:
                pass
            # ldap3 keeps the socket of a connection that failed to open (directory down): close it.
            sock = getattr(conn, "socket", None)
            if sock is not None:
                sock.close()
        return DirectoryUser(username, groups)


class DirectoryAuthenticator:
    """Local accounts first (IT, and the fallback), then the directory; a directory sign-in maps the
    groups to a role and schools and refreshes the user's shadow row."""

    def __init__(self, db: Database, local: Authenticator, ldap: LDAPAuthenticator, mapping: list[DirectoryGroup],
                 known_schools: set[str]):
        self.db, self.local, self.ldap, self.mapping, self.known_schools = db, local, ldap, mapping, known_schools

    def authenticate(self, username: str, password: str) -> Principal | None:
        p = self.local.authenticate(username, password)
        if p is not None:
            return p
        with self.db.session() as s:
            row = s.scalar(select(User).where(User.username == username))
            if row is not None and (row.password_hash != DIRECTORY_HASH or not row.active):
                return None  # a local account (wrong password), or a directory user IT disabled
        try:
            found = self.ldap.lookup(username, password)
        except DirectoryError as e:
            log.warning("directory sign-in not possible: %s", e)
            return None
        if found is None:
            return None
        mapped = map_groups(found.groups, self.mapping, self.known_schools)
        if mapped is None:
            audit.record(self.db, "web.login_refused", username, {"reason": "no group maps to a role"},
                         actor=username)
            return None
        role, schools = mapped
        self._shadow(username, role, schools)
        return Principal(username, role, schools, credential_tag(DIRECTORY_HASH))

    def _shadow(self, username: str, role: str, schools: frozenset[str]) -> None:
        with self.db.session() as s:
            row = s.scalar(select(User).where(User.username == username))
            if row is None:
                row = User(username=username, password_hash=DIRECTORY_HASH, role=role, active=True)
                s.add(row)
            row.role = role
            row.schools = [UserSchool(school_id=sc) for sc in sorted(schools)]


def make_authenticator(db: Database, ldap_cfg: LDAPConfig, local: Authenticator, known_schools: set[str]
                       ) -> Authenticator:
    """The web page's authenticator: local accounts, and the directory where [web.ldap] url is set."""
    if not ldap_cfg.url:
        return local
    return DirectoryAuthenticator(db, local, LDAPAuthenticator(ldap_cfg), ldap_cfg.groups, known_schools)
