"""Activation Lock escrow: the bypass code from an ActivationLockBypassCode answer is stored only
encrypted, shown only to allowed IT staff (audited), and never appears in plain text in the
database, the logs, the audit trail, a report or an error; plus the compliance rule for it."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select

from cli import main
from compliance.engine import evaluate
from compliance.facts import DeviceFacts, EvalContext
from compliance.rules import load_baselines
from core.actor import real_user
from core.config import load_config
from core.db import Database
from core.models import AuditEvent
from core.secrets import Secret
from ipad.actions.activation_lock import escrow_observers, escrowed_serials, show_code
from ipad.errors import EscrowError
from ipad.models import ActivationLockEscrow, MDMCommand
from ipad.payloads.mdm_schema import validate_response
from ipad.store.registry import Registry
from tests.ipad.webhook_events import AUTH, KEY, TOKEN, UDID, event, post

CODE = "K1DJ9-4NZH2-PQ7RT-W8XC3-VB6MN-YF5GL"
SERIAL = "ZDWK1DEGZD"


def answer(cmd_uuid: str = "ALBC-0001") -> dict:
    report = {"UDID": UDID, "CommandUUID": cmd_uuid, "Status": "Acknowledged", "ActivationLockBypassCode": CODE}
    assert validate_response("ActivationLockBypassCode", report) == []  # Apple's response keys
    return report


class World:
    def __init__(self, root: Path, key: bool = True):
        self.root = root
        self.key_file = root / "escrow.key"
        if key:
            self.key_file.write_text(Fernet.generate_key().decode() + "\n")
            os.chmod(self.key_file, 0o600)
        self.config_path = root / "werne.toml"
        self.config_path.write_text(
            f'[site]\nstate_dir = "{root / "state"}"\n'
            + (f'[activation_lock]\nkey_file = "{self.key_file}"\n'
               f'allowed_users = ["it-admin", "{real_user()}"]\n' if key else ""),
            encoding="utf-8")
        self.config = load_config(self.config_path)
        self.db = Database(self.config.database_url)

    def plaintext_anywhere(self) -> list[str]:
        """Every file under root (database, its WAL, logs, reports) that holds the code in plain text."""
        return [str(p) for p in self.root.rglob("*") if p.is_file() and CODE.encode() in p.read_bytes()]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.db.dispose()


def test_the_code_is_escrowed_encrypted_and_shown_only_to_it_staff(
        world: World, webhook_server, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    escrow = escrow_observers(world.config)
    assert escrow
    registry = Registry(world.db, school_of=lambda s: ("gs-demo", "pupil") if s == SERIAL else None, observers=escrow)
    url = webhook_server(registry, Secret(KEY, "test")).url
    for body in (event("mdm.Authenticate", AUTH, "e1"), event("mdm.TokenUpdate", TOKEN, "e2"),
                 event("mdm.Connect", answer(), "e3", status="Acknowledged", command_uuid="ALBC-0001")):
        assert post(url, body).status_code == 200
    assert escrowed_serials(world.db) == {SERIAL}
    with world.db.session() as s:
        row = s.scalars(select(ActivationLockEscrow)).one()
        assert row.serial == SERIAL and row.command_uuid == "ALBC-0001" and CODE not in row.ciphertext
        stored = s.scalars(select(MDMCommand).where(MDMCommand.command_uuid == "ALBC-0001")).one()
        assert stored.request_type == "ActivationLockBypassCode"
        assert stored.result["ActivationLockBypassCode"] == "***"
    # IT staff see it; everyone else gets a one-line refusal without the code; both are audited.
    assert show_code(world.config, world.db, SERIAL.lower(), actor="it-admin") == CODE
    with pytest.raises(EscrowError) as e:
        show_code(world.config, world.db, SERIAL, actor="lehrer")
    assert str(e.value) == (f"activation lock code of {SERIAL}: user 'lehrer' is not in "
                            "activation_lock.allowed_users") and e.value.exit_code == 2
    r = CliRunner().invoke(main, ["--config", str(world.config_path), "ipad", "activation-lock", "show", SERIAL])
    assert (r.exit_code, r.output) == (0, CODE + "\n")
    with world.db.session() as s:
        audits = [(a.actor, a.action, a.detail["result"]) for a in s.scalars(
            select(AuditEvent).where(AuditEvent.action == "ipad.activation_lock.show").order_by(AuditEvent.id))]
    assert audits == [("it-admin", "ipad.activation_lock.show", "shown"),
                      ("lehrer", "ipad.activation_lock.show", "refused: user 'lehrer' is not in "
                                                              "activation_lock.allowed_users"),
                      (real_user(), "ipad.activation_lock.show", "shown")]
    # A report of the fleet: the list of iPads and a compliance run's facts.
    r = CliRunner().invoke(main, ["--config", str(world.config_path), "ipad", "list", "--json"])
    (world.root / "ipad-list.json").write_text(r.output)
    world.db.dispose()  # checkpoint: the database file itself is searched, not only its WAL
    (world.root / "test.log").write_text("\n".join(r.getMessage() for r in caplog.records))
    assert world.plaintext_anywhere() == []
    assert CODE not in caplog.text


def test_a_wrong_key_or_no_code_is_a_one_line_refusal(world: World) -> None:
    assert escrow_observers(world.config)
    from ipad.actions.activation_lock import load_key, store_code

    with world.db.transaction() as conn:
        store_code(conn, load_key(world.config), UDID, SERIAL, "c1", CODE)
    world.key_file.write_text(Fernet.generate_key().decode())
    cfg = load_config(world.config_path)
    with pytest.raises(EscrowError) as e:
        show_code(cfg, world.db, SERIAL, actor="it-admin")
    assert "escrowed with another key" in str(e.value) and CODE not in str(e.value)
    with pytest.raises(EscrowError) as e2:
        show_code(cfg, world.db, "ZZZZ1DEGZD", actor="it-admin")
    assert "no bypass code escrowed" in str(e2.value)
    world.key_file.write_text("not-a-fernet-key")
    with pytest.raises(EscrowError) as e3:
        show_code(load_config(world.config_path), world.db, SERIAL, actor="it-admin")
    assert "is not a Fernet key" in str(e3.value) and "not-a-fernet-key" not in str(e3.value)


def test_without_a_key_the_code_is_dropped_never_stored(tmp_path: Path, webhook_server,  # type: ignore[no-untyped-def]
                                                       caplog: pytest.LogCaptureFixture) -> None:
    w = World(tmp_path, key=False)
    try:
        assert escrow_observers(w.config) == []
        registry = Registry(w.db, school_of=lambda s: ("gs-demo", "pupil") if s == SERIAL else None)
        url = webhook_server(registry, Secret(KEY, "test")).url
        assert post(url, event("mdm.Authenticate", AUTH, "e1")).status_code == 200
        assert post(url, event("mdm.Connect", answer(), "e3", status="Acknowledged",
                               command_uuid="ALBC-0001")).status_code == 200
        assert escrowed_serials(w.db) == set()
        assert "ActivationLockBypassCode answer of" in caplog.text and CODE not in caplog.text
    finally:
        w.db.dispose()
    assert w.plaintext_anywhere() == []


def test_cli_makes_a_key_file_0600_and_never_overwrites_it(tmp_path: Path) -> None:
    out = tmp_path / "k"
    r = CliRunner().invoke(main, ["ipad", "activation-lock", "key", "--out", str(out)])
    assert r.exit_code == 0 and (out.stat().st_mode & 0o777) == 0o600
    Fernet(out.read_text().strip().encode())
    r2 = CliRunner().invoke(main, ["ipad", "activation-lock", "key", "--out", str(out)])
    assert r2.exit_code == 2 and "never overwritten" in r2.output


@pytest.mark.parametrize(
    "supervised, escrowed, expected",
    [(True, True, "pass"), (True, False, "fail"), (False, False, "not_applicable")],
)
def test_rule_supervised_ipad_without_escrowed_code(supervised: bool, escrowed: bool, expected: str) -> None:
    rules = [r for r in load_baselines().for_fleet("ipads") if r.id == "ios-activation-lock-escrowed"]
    dev = DeviceFacts(device=SERIAL, fleet="ipads",
                      facts={"device": {"is_supervised": supervised}, "activation_lock": {"escrowed": escrowed}})
    (res,) = evaluate(rules, [dev], EvalContext(config=load_config(None)))
    assert res.status == expected
    if expected == "fail":
        assert "werne ipad activation-lock escrow" in res.evidence
