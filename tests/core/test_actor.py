"""Issue 22: who is acting rests on the real user, never on environment variables anyone can set.

The Activation Lock bypass codes are gated on the actor's name and every audit event records it:
USER, LOGNAME, a WERNE_ACTOR or a SUDO_USER set by hand must change neither."""

from __future__ import annotations

import os
import pwd
import sqlite3
import subprocess
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from core.actor import ProcessIds, real_user, sudo_caller
from tests.fixtures.cli import werne

NAMES = {0: "root", 1000: "anna", 1001: "bernd", 65534: "nobody"}


def lookup(uid: int) -> str:
    return NAMES[uid]


FORGED = {"USER": "it-admin", "LOGNAME": "it-admin", "WERNE_ACTOR": "it-admin", "USERNAME": "it-admin"}


@pytest.mark.parametrize(
    ("ids", "env", "expected"),
    [
        # An ordinary user: their own name, whatever the environment says.
        (ProcessIds(1000, 1000, 1000), FORGED, "anna"),
        (ProcessIds(1000, 1000, 1000), {**FORGED, "SUDO_UID": "1001", "SUDO_USER": "bernd"}, "anna"),
        # A set-uid root binary started by anna is not sudo: only the real uid counts.
        (ProcessIds(1000, 0, 1000), {"SUDO_UID": "1001", "SUDO_USER": "bernd"}, "anna"),
        # Really under sudo: the caller, from SUDO_UID (the name looked up from the number).
        (ProcessIds(0, 0, 1000), {"SUDO_UID": "1000", "SUDO_USER": "anna"}, "anna"),
        (ProcessIds(0, 0, None), {"SUDO_UID": "1000", "SUDO_USER": "anna"}, "anna"),
        (ProcessIds(0, 0, 1000), {"SUDO_UID": "1000"}, "anna"),
        # SUDO_USER alone, or one that names someone else than SUDO_UID: not sudo's word.
        (ProcessIds(0, 0, None), {**FORGED, "SUDO_USER": "it-admin"}, "root"),
        (ProcessIds(0, 0, None), {"SUDO_UID": "1000", "SUDO_USER": "bernd"}, "root"),
        # root logged in as root (login uid 0) and set SUDO_UID itself.
        (ProcessIds(0, 0, 0), {"SUDO_UID": "1000", "SUDO_USER": "anna"}, "root"),
        (ProcessIds(0, 0, 1001), {"SUDO_UID": "1000", "SUDO_USER": "anna"}, "root"),
        # Malformed numbers.
        (ProcessIds(0, 0, None), {"SUDO_UID": "1000 ", "SUDO_USER": "anna"}, "root"),
        (ProcessIds(0, 0, None), {"SUDO_UID": "-1"}, "root"),
        (ProcessIds(0, 0, None), {"SUDO_UID": "١٠٠٠"}, "root"),  # Arabic-Indic digits: isdigit() is True
        (ProcessIds(0, 0, None), {"SUDO_UID": "0"}, "root"),
    ],
)
def test_the_actor_is_the_real_user(ids: ProcessIds, env: dict[str, str], expected: str) -> None:
    assert real_user(env, ids, lookup) == expected


def test_a_uid_without_a_name_is_shown_by_number() -> None:
    assert real_user({}, ProcessIds(4242, 4242, None), lookup) == "uid 4242"
    assert sudo_caller(ProcessIds(0, 0, None), {"SUDO_UID": "4242"}) == 4242


# ---------------------------------------------------------------- the gate and the audit, end to end --

CODE = "K1DJ9-4NZH2-PQ7RT-W8XC3-VB6MN-YF5GL"
SERIAL = "ZDWK1DEGZD"


def _site(root: Path, allowed: list[str]) -> Path:
    from core.config import load_config
    from core.db import Database
    from ipad.actions.activation_lock import load_key, store_code

    key = root / "escrow.key"
    key.write_text(Fernet.generate_key().decode() + "\n", encoding="utf-8")
    key.chmod(0o600)
    cfg = root / "werne.toml"
    cfg.write_text(f'[site]\nstate_dir = "{root / "state"}"\n[activation_lock]\nkey_file = "{key}"\n'
                   f"allowed_users = {allowed!r}\n".replace("'", '"'), encoding="utf-8")
    config = load_config(cfg)
    db = Database(config.database_url)
    with db.transaction() as conn:
        store_code(conn, load_key(config), "U-1", SERIAL, "c1", CODE)
    db.dispose()
    return cfg


def _show(cfg: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return werne(cfg, "ipad", "activation-lock", "show", SERIAL, env=env, strip=("WERNE_", "SUDO_"))


def _audit_actors(cfg: Path) -> list[tuple[str, str]]:
    db = cfg.parent / "state" / "werne.db"
    with sqlite3.connect(db) as conn:
        return [(a, d) for a, d in conn.execute(
            "SELECT actor, json_extract(detail, '$.result') FROM audit_events "
            "WHERE action = 'ipad.activation_lock.show' ORDER BY id")]


@pytest.mark.parametrize("forged", [FORGED, {"SUDO_USER": "it-admin"},
                                    {"SUDO_USER": "it-admin", "SUDO_UID": str(pwd.getpwnam("nobody").pw_uid)}],
                         ids=["USER-LOGNAME-WERNE_ACTOR", "SUDO_USER", "SUDO_USER-disagrees-with-SUDO_UID"])
def test_environment_variables_do_not_open_the_bypass_code_gate(tmp_path: Path, forged: dict[str, str]) -> None:
    me = real_user()
    assert me != "it-admin"
    cfg = _site(tmp_path, ["it-admin"])
    r = _show(cfg, forged)
    assert CODE not in r.stdout + r.stderr
    assert (r.returncode, r.stderr) == (2, f"Error: activation lock code of {SERIAL}: user {me!r} is not in "
                                           "activation_lock.allowed_users\n")
    assert _audit_actors(cfg) == [(me, f"refused: user {me!r} is not in activation_lock.allowed_users")]


def test_the_real_user_is_let_through_and_audited_by_name(tmp_path: Path) -> None:
    me = real_user()
    cfg = _site(tmp_path, [me])
    r = _show(cfg, {"USER": "somebody-else", "LOGNAME": "somebody-else"})
    assert (r.returncode, r.stdout) == (0, CODE + "\n"), r.stderr
    assert _audit_actors(cfg) == [(me, "shown")]


def test_under_sudo_the_caller_is_the_actor(tmp_path: Path) -> None:
    """Run as root with the SUDO_* that sudo sets for nobody: the audit names nobody (where the
    login uid is set, it must be nobody's too, which only a real login as nobody gives)."""
    from core.actor import read_loginuid

    if os.getuid() != 0 or read_loginuid() not in (None, pwd.getpwnam("nobody").pw_uid):
        pytest.skip("needs root without a login uid of another user (sudo's own case is the unit test above)")
    nobody = pwd.getpwnam("nobody")
    cfg = _site(tmp_path, ["nobody"])
    r = _show(cfg, {"SUDO_UID": str(nobody.pw_uid), "SUDO_GID": str(nobody.pw_gid), "SUDO_USER": "nobody"})
    assert (r.returncode, r.stdout) == (0, CODE + "\n"), r.stderr
    assert _audit_actors(cfg) == [("nobody", "shown")]
