"""Issue 22: an attacker who knows a coordinator's user name cannot lock them out. Failed logins
answer with a backoff per (user, address) that doubles, never a lock of the account; many failures
from many addresses alert IT (audit event and log line, once per window) and leave the account
usable; `werne user unlock NAME` ends a backoff at once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.audit import list_events
from core.db import Database
from enrolment import accounts
from enrolment.accounts import LocalAuthenticator, Principal
from enrolment.errors import AuthError, RateLimited

PASSWORD = "correct horse battery staple"
WRONG = "falsch-falsch-falsch"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    import enrolment.models  # noqa: F401

    database = Database(f"sqlite:///{tmp_path / 'werne.db'}")
    accounts.add_user(database, "anna", PASSWORD, "coordinator", ["gs-demo"], {"gs-demo"}, "test")
    return database


class OnePassword:
    """The Authenticator seam with a plain comparison: the backoff is under test, not argon2 (the
    CLI test below goes through the real accounts and hashes)."""

    def authenticate(self, username: str, password: str) -> Principal | None:
        return Principal(username, "coordinator") if password == PASSWORD else None


def attempt(db: Database, password: str, address: str, at: datetime, real: bool = False) -> str:
    try:
        accounts.login(db, LocalAuthenticator(db) if real else OnePassword(), "anna", password, address, now=at)
    except RateLimited as e:
        return f"wait {e.retry_after.total_seconds():g}s"
    except AuthError:
        return "wrong"
    return "ok"


def test_guessing_from_many_addresses_never_locks_the_real_user_out(db: Database) -> None:
    t = T0
    for n in range(24):  # 24 guesses, 4 from each of 6 addresses
        t += timedelta(seconds=1)
        assert attempt(db, WRONG, f"203.0.113.{n // 4}", t) == "wrong"
    # Before: the account was locked for everyone after 20 failures.
    assert attempt(db, PASSWORD, "192.0.2.10", t + timedelta(seconds=1)) == "ok"


def test_the_backoff_of_one_address_doubles_and_ends(db: Database) -> None:
    t = T0
    outcomes = []
    for _ in range(accounts.MAX_FAILED_LOGINS):
        outcomes.append(attempt(db, WRONG, "198.51.100.7", t))
    assert outcomes == ["wrong"] * accounts.MAX_FAILED_LOGINS
    # The 5th failure asks for 15 s; right away even the right password waits.
    assert attempt(db, PASSWORD, "198.51.100.7", t + timedelta(seconds=1)) == "wait 14s"
    t += timedelta(seconds=15)
    assert attempt(db, WRONG, "198.51.100.7", t) == "wrong"  # the 6th: 30 s now
    assert attempt(db, WRONG, "198.51.100.7", t + timedelta(seconds=29)) == "wait 1s"
    t += timedelta(seconds=30)
    assert attempt(db, WRONG, "198.51.100.7", t) == "wrong"  # the 7th: 60 s
    assert attempt(db, PASSWORD, "198.51.100.7", t + timedelta(seconds=59)) == "wait 1s"
    # Waited out: the right password gets in, and that ends the backoff of this address.
    assert attempt(db, PASSWORD, "198.51.100.7", t + timedelta(seconds=60)) == "ok"
    assert attempt(db, WRONG, "198.51.100.7", t + timedelta(seconds=61)) == "wrong"
    assert attempt(db, PASSWORD, "198.51.100.7", t + timedelta(seconds=62)) == "ok"
    # Another address was never slowed down.
    assert attempt(db, PASSWORD, "192.0.2.10", T0 + timedelta(seconds=2)) == "ok"


def test_the_backoff_is_capped_at_15_minutes(db: Database) -> None:
    assert [accounts.backoff(n).total_seconds() for n in range(4, 14)] == [
        0, 15, 30, 60, 120, 240, 480, 900, 900, 900]


def test_many_failures_from_many_addresses_alert_it_once(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="werne.alerts")
    t = T0
    for n in range(accounts.ALERT_FAILURES + 5):
        t += timedelta(seconds=2)
        attempt(db, WRONG, f"203.0.113.{n % 10}", t)
    alerts = [e for e in list_events(db) if e.action == "alert.login_failures"]
    assert [(a.target, a.actor, a.detail["failures"], a.detail["addresses"]) for a in alerts] == [
        ("anna", "werne", accounts.ALERT_FAILURES, 10)]
    assert [r.getMessage() for r in caplog.records] == [
        "ALERT login_failures: 20 failed logins for web account 'anna' from 10 address(es) in 15 minutes "
        "(password guessing?); the account stays usable, each address waits longer after each failure"]
    # A new window, a new alert.
    t += accounts.ALERT_WINDOW
    for n in range(accounts.ALERT_FAILURES):
        t += timedelta(seconds=1)
        attempt(db, WRONG, f"198.51.100.{n}", t)
    assert len([e for e in list_events(db) if e.action == "alert.login_failures"]) == 2


def test_user_unlock_ends_the_backoff(run_cli, tmp_path: Path, state_dir: Path) -> None:
    from core.actor import real_user
    from core.config import load_config
    from tests.fixtures.site import DEMO_INVENTORY, write_config

    cfg = write_config(tmp_path / "werne.toml", DEMO_INVENTORY, state_dir)
    db = Database(load_config(cfg).database_url)
    accounts.add_user(db, "anna", PASSWORD, "coordinator", ["gs-demo"], {"gs-demo"}, "test")
    now = datetime.now(UTC)
    for _ in range(accounts.MAX_FAILED_LOGINS):
        attempt(db, WRONG, "198.51.100.7", now - timedelta(seconds=1), real=True)
    assert attempt(db, PASSWORD, "198.51.100.7", now, real=True).startswith("wait ")
    r = run_cli("user", "unlock", "anna", config=cfg)
    assert (r.exit_code, r.stdout) == (0, "user anna: 5 failed login(s) forgotten; the backoff is over\n")
    assert attempt(db, PASSWORD, "198.51.100.7", now, real=True) == "ok"
    (event,) = [e for e in list_events(db) if e.action == "user.unlock"]
    assert (event.actor, event.target, event.detail) == (real_user(), "anna", {"failed_logins_forgotten": 5})
    r = run_cli("user", "unlock", "nobody-here", config=cfg)
    assert (r.exit_code, r.stderr) == (2, "Error: no such user: nobody-here\n")
