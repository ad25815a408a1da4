"""The `werne user`, `werne enrol` and `werne web` commands: exact output, exit codes, passwords never
from argv, one-line errors with nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.actor import real_user
from core.db import Database
from enrolment import requests as reqs
from enrolment.accounts import LocalAuthenticator, Principal, list_users
from tests.fixtures.enrolment import DEMO_INVENTORY, PASSWORD, SCHOOL_A
from tests.fixtures.site import write_config

A = Principal("anna", "coordinator", frozenset({SCHOOL_A}))


@pytest.fixture
def cfg(tmp_path: Path, state_dir: Path) -> Path:
    secret = tmp_path / "web-secret"
    secret.write_text("s" * 40)
    return write_config(
        tmp_path / "werne.toml",
        DEMO_INVENTORY,
        state_dir,
        f'[web]\nsecret_key_file = "{secret}"\nsecure_cookies = false\n',
    )


@pytest.fixture
def db(state_dir: Path, migrated_db) -> Database:  # type: ignore[no-untyped-def]
    import enrolment.models  # noqa: F401

    return Database(migrated_db(state_dir / "werne.db"))


def test_user_add_from_stdin_and_login_works(run_cli, cfg: Path, db: Database) -> None:  # type: ignore[no-untyped-def]
    r = run_cli(
        "user",
        "add",
        "Anna.Schmidt",
        "--role",
        "coordinator",
        "--school",
        SCHOOL_A,
        "--password-stdin",
        config=cfg,
        input=PASSWORD + "\n",
    )
    assert (r.exit_code, r.output) == (0, f"user anna.schmidt added (coordinator: {SCHOOL_A})\n")
    p = LocalAuthenticator(db).authenticate("anna.schmidt", PASSWORD)
    assert p is not None and p.schools == frozenset({SCHOOL_A})
    assert LocalAuthenticator(db).authenticate("anna.schmidt", PASSWORD + "x") is None
    r = run_cli("user", "list", config=cfg)
    assert r.output == f"anna.schmidt             coordinator  active    {SCHOOL_A}\n"


def test_user_add_prompts_with_confirmation(run_cli, cfg: Path, db: Database) -> None:  # type: ignore[no-untyped-def]
    r = run_cli("user", "add", "it", "--role", "admin", config=cfg, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output
    assert LocalAuthenticator(db).authenticate("it", PASSWORD) is not None


def test_password_is_never_an_argument(run_cli, cfg: Path, db: Database) -> None:  # type: ignore[no-untyped-def]
    r = run_cli("user", "add", "it", "--role", "admin", "--password", PASSWORD, config=cfg)
    assert r.exit_code == 2 and "No such option '--password'" in r.output
    assert list_users(db) == []


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        (
            ["user", "add", "x y", "--role", "admin", "--password-stdin"],
            PASSWORD,
            "Error: bad user name 'x y': lower-case letters, digits, '.', '_', '-'\n",
        ),
        (
            ["user", "add", "bob", "--role", "coordinator", "--password-stdin"],
            PASSWORD,
            "Error: a coordinator needs at least one --school\n",
        ),
        (
            ["user", "add", "bob", "--role", "coordinator", "--school", "nowhere", "--password-stdin"],
            PASSWORD,
            "Error: unknown school(s): nowhere\n",
        ),
        (
            ["user", "add", "bob", "--role", "admin", "--password-stdin"],
            "short",
            "Error: password too short: at least 12 characters\n",
        ),
        (["user", "disable", "nobody"], None, "Error: no such user: nobody\n"),
        (["enrol", "show", "999"], None, "Error: no such request: 999\n"),
    ],
)
def test_bad_input_one_line_exit_2(run_cli, cfg: Path, db: Database, args, stdin, message) -> None:  # type: ignore[no-untyped-def]
    r = run_cli(*args, config=cfg, input=(stdin + "\n") if stdin else None)
    assert (r.exit_code, r.stderr) == (2, message)
    assert list_users(db) == []


def test_enrol_list_show_reject_close(run_cli, cfg: Path, db: Database) -> None:  # type: ignore[no-untyped-def]
    from core.inventory import load_inventory

    v = reqs.create_request(
        db, load_inventory(DEMO_INVENTORY), A, SCHOOL_A, "pupil", "Klasse 5b", "CLISER00001"
    )
    r = run_cli("enrol", "list", config=cfg)
    assert r.output == f"{v.id:>5}  submitted  {SCHOOL_A:<12} pupil    0/1  Klasse 5b\n"
    r = run_cli("enrol", "reject", str(v.id), config=cfg)
    assert r.exit_code == 2 and "Missing option '--reason'" in r.stderr
    r = run_cli(
        "enrol",
        "reject",
        str(v.id),
        "--reason",
        "nicht im Bestand",
        config=cfg,
    )
    assert r.exit_code == 0
    assert r.output == (
        f"request {v.id}: {SCHOOL_A} pupil 'Klasse 5b' rejected (0 of 1 enrolled, 0 configured) "
        "by anna\n  reason: nicht im Bestand\n  CLISER00001   rejected\n"
    )
    r = run_cli("enrol", "approve", str(v.id), config=cfg)
    assert (r.exit_code, r.stderr) == (2, f"Error: request {v.id} is rejected; it cannot be approved\n")
    r = run_cli("enrol", "close", str(v.id), config=cfg)
    assert r.exit_code == 2 and "only configured requests can be closed" in r.stderr
    r = run_cli("audit", "--json", config=cfg)
    assert '"enrol.reject"' in r.output and f'"{real_user()}"' in r.output


def test_web_serve_without_session_key(run_cli, tmp_path: Path, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "plain.toml", DEMO_INVENTORY, state_dir)
    r = run_cli("web", "serve", "--port", "1", config=cfg, env={"WERNE_WEB_SECRET": ""})
    assert (r.exit_code, r.stderr) == (2, "Error: web session key: no secret found ($WERNE_WEB_SECRET)\n")
