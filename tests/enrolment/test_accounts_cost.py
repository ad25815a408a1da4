"""The cost of the password hashes: werne hashes at argon2id's RFC 9106 low-memory setting, reads
the parameters each hash names, and a successful login rehashes a hash made at another cost (an
older werne's, or the quick hashes the tests make: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher
from argon2.profiles import RFC_9106_LOW_MEMORY
from sqlalchemy import select

from core.db import Database
from enrolment import accounts
from enrolment.accounts import LocalAuthenticator, credential_tag
from enrolment.models import User

PASSWORD = "correct horse battery staple"


def stored_hash(db: Database, name: str) -> str:
    with db.session() as s:
        return str(s.scalar(select(User.password_hash).where(User.username == name)))


def test_werne_hashes_at_rfc_9106_low_memory_and_a_login_raises_a_cheaper_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quick = accounts._hasher  # the tests' (tests/conftest.py)
    monkeypatch.undo()
    werne = accounts._hasher
    assert (werne.time_cost, werne.memory_cost, werne.parallelism, werne.type) == (
        RFC_9106_LOW_MEMORY.time_cost, RFC_9106_LOW_MEMORY.memory_cost, RFC_9106_LOW_MEMORY.parallelism,
        RFC_9106_LOW_MEMORY.type)
    assert isinstance(quick, PasswordHasher) and quick is not werne

    db = Database(f"sqlite:///{tmp_path / 'werne.db'}")
    monkeypatch.setattr(accounts, "_hasher", quick)
    accounts.add_user(db, "anna", PASSWORD, "coordinator", ["gs-demo"], {"gs-demo"}, "test")
    cheap = stored_hash(db, "anna")
    assert cheap.startswith("$argon2id$v=19$m=1024,t=1,p=1$")

    monkeypatch.setattr(accounts, "_hasher", werne)
    auth = LocalAuthenticator(db)
    assert auth.authenticate("anna", "not the password at all") is None
    assert stored_hash(db, "anna") == cheap  # a failed login changes nothing
    who = auth.authenticate("anna", PASSWORD)
    assert who is not None and who.username == "anna"
    raised = stored_hash(db, "anna")
    assert raised.startswith(f"$argon2id$v=19$m={werne.memory_cost},t={werne.time_cost},p={werne.parallelism}$")
    assert who.credential_tag == credential_tag(raised) != credential_tag(cheap)
    assert auth.authenticate("anna", PASSWORD) is not None and stored_hash(db, "anna") == raised
    db.dispose()
