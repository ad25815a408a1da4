"""Sign-in through a real LDAP directory (Debian's slapd, a throwaway one): a bind with the user's
name and password, groups mapped to roles and schools, a shadow row, local accounts first, the
directory down means the local accounts still work, and IT can disable a directory user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import LDAPConfig
from core.db import Database
from enrolment.accounts import LocalAuthenticator, add_user, set_active
from enrolment.directory import DirectoryAuthenticator, LDAPAuthenticator, map_groups
from tests.fixtures.directory import PASSWORD, SUFFIX, Directory

SCHOOLS = {"gs-demo", "gym-demo"}


def ldap_config(d: Directory) -> LDAPConfig:
    import tomllib

    return LDAPConfig.model_validate(tomllib.loads(d.toml())["web"]["ldap"])


@pytest.fixture
def db(tmp_path: Path, migrated_db) -> Iterator[Database]:  # type: ignore[no-untyped-def]
    d = Database(migrated_db(tmp_path / "w.db"))
    yield d
    d.dispose()


def auth(db: Database, d: Directory) -> DirectoryAuthenticator:
    cfg = ldap_config(d)
    return DirectoryAuthenticator(db, LocalAuthenticator(db), LDAPAuthenticator(cfg), cfg.groups, SCHOOLS)


def test_teachers_sign_in_with_their_directory_password(db: Database, directory: Directory) -> None:
    a = auth(db, directory)
    p = a.authenticate("mmeier", PASSWORD)
    assert p is not None and (p.role, p.schools) == ("teacher", frozenset({"gs-demo"}))
    other = a.authenticate("kkurz", PASSWORD)
    assert other is not None and other.schools == frozenset({"gym-demo"})
    coord = a.authenticate("ccoord", PASSWORD)
    assert coord is not None and coord.role == "coordinator"
    assert a.authenticate("mmeier", "wrong password") is None
    assert a.authenticate("mmeier", "") is None  # not an anonymous bind
    assert a.authenticate("nobody", PASSWORD) is None  # in no group that werne maps
    assert a.authenticate("ghost", PASSWORD) is None
    # A name that tries to change the DN or the filter is escaped, not interpreted.
    assert a.authenticate("mmeier,ou=people", PASSWORD) is None
    assert a.authenticate("*)(uid=*", PASSWORD) is None


def test_local_accounts_first_and_as_the_fallback(db: Database, directory: Directory) -> None:
    add_user(db, "it-admin", "a long local password", "admin", [], SCHOOLS, "pytest")
    a = auth(db, directory)
    assert a.authenticate("it-admin", "a long local password").role == "admin"  # type: ignore[union-attr]
    directory.stop()
    try:
        assert a.authenticate("it-admin", "a long local password") is not None
        assert a.authenticate("mmeier", PASSWORD) is None  # the directory is down: no error, no sign-in
    finally:
        from lab import processes

        processes.up(directory.service)  # the module's other tests need it again


def test_it_disables_a_directory_user(db: Database, directory: Directory) -> None:
    a = auth(db, directory)
    assert a.authenticate("mmeier", PASSWORD) is not None
    set_active(db, "mmeier", False, "pytest")
    assert a.authenticate("mmeier", PASSWORD) is None


def test_group_mapping_takes_the_highest_role() -> None:
    cfg = LDAPConfig.model_validate({"url": "ldap://x", "groups": [
        {"group": "lk", "role": "teacher", "schools": ["gs-demo"]},
        {"group": "ko", "role": "coordinator", "schools": ["gym-demo", "nowhere"]}]})
    assert map_groups(frozenset({"LK", "ko"}), cfg.groups, SCHOOLS) == ("coordinator", frozenset({"gym-demo"}))
    assert map_groups(frozenset({"other"}), cfg.groups, SCHOOLS) is None
    assert SUFFIX.startswith("dc=")
