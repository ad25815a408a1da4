"""Activation Lock escrow: each supervised iPad's bypass code, stored encrypted at rest.

The code arrives as the answer to ActivationLockBypassCode. The webhook parser takes it out of the
answer before anything is stored (ipad.webhook.parse: `ParsedEvent.secret`), and the escrow sink
installed here encrypts it (Fernet: AES-128-CBC + HMAC-SHA256) with the key of
activation_lock.key_file in the same transaction. Only `show_code` decrypts, for the login names in
activation_lock.allowed_users, and every attempt is audited; the code is never logged, reported,
put in an exception or stored in plain text.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select

from core import audit
from core.config import Config
from core.db import Database
from core.errors import InputError
from core.models import utcnow
from core.secrets import Secret, read_secret
from ipad.models import ActivationLockEscrow
from mdm_client.errors import MDMError

log = logging.getLogger("werne.ipad.activation_lock")
REQUEST_TYPE = "ActivationLockBypassCode"


class EscrowError(MDMError, InputError):
    """The escrow cannot be used: no key, a wrong key, no code stored, or a user not allowed (exit 2)."""


@dataclass(frozen=True)
class EscrowKey:
    """The Fernet key, and its id (a digest, stored beside each ciphertext)."""

    fernet: Fernet
    key_id: str

    def __repr__(self) -> str:
        return f"EscrowKey(***, key_id={self.key_id!r})"


def new_key() -> str:
    """A fresh Fernet key (urlsafe base64, 32 bytes) for activation_lock.key_file."""
    return Fernet.generate_key().decode()


def load_key(config: Config) -> EscrowKey:
    """The escrow key from activation_lock.key_file (or its variable). Raises EscrowError."""
    al = config.activation_lock
    secret: Secret = read_secret(file=al.key_file, env=al.key_env, what="Activation Lock escrow key")
    try:
        fernet = Fernet(secret.reveal().encode())
    except ValueError:
        raise EscrowError(f"Activation Lock escrow key ({secret.source}) is not a Fernet key "
                          "(32 url-safe base64 bytes; `werne ipad activation-lock key` makes one)") from None
    return EscrowKey(fernet, hashlib.sha256(secret.reveal().encode()).hexdigest()[:16])


def _upsert(conn: Any, row: dict[str, Any]) -> None:
    from ipad.store import _dialect_insert

    ins = _dialect_insert(ActivationLockEscrow.__table__, conn.dialect.name)
    conn.execute(ins.on_conflict_do_update(
        index_elements=["enrollment_id"],
        set_={k: ins.excluded[k] for k in ("serial", "ciphertext", "key_id", "command_uuid", "stored_at")},
    ), row)


def store_code(conn: Any, key: EscrowKey, enrollment_id: str, serial: str | None, command_uuid: str | None,
               code: str) -> None:
    """Encrypt and store (or replace) one device's bypass code, inside the caller's transaction."""
    _upsert(conn, {
        "enrollment_id": enrollment_id,
        "serial": serial,
        "ciphertext": key.fernet.encrypt(code.encode()).decode(),
        "key_id": key.key_id,
        "command_uuid": command_uuid,
        "stored_at": utcnow(),
    })


def escrow_configured(config: Config) -> bool:
    """This site escrows bypass codes (activation_lock.key_file, or its key variable, is set)."""
    al = config.activation_lock
    return al.key_file is not None or bool(al.key_env and os.environ.get(al.key_env))


def install_escrow(config: Config) -> bool:
    """Let the webhook receiver escrow bypass codes with the configured key; False when none is set."""
    from ipad.store import set_escrow_sink

    if not escrow_configured(config):
        set_escrow_sink(None)
        return False
    key = load_key(config)

    def sink(conn: Any, enrollment_id: str, serial: str | None, command_uuid: str | None, code: str) -> None:
        store_code(conn, key, enrollment_id, serial, command_uuid, code)

    set_escrow_sink(sink)
    return True


def escrowed_serials(db: Database) -> set[str]:
    """Serials whose bypass code is escrowed (for the compliance rule ios-activation-lock-escrowed)."""
    with db.session() as s:
        return {x for x in s.scalars(select(ActivationLockEscrow.serial)) if x}


def show_code(config: Config, db: Database, serial: str, actor: str | None = None) -> str:
    """Decrypt one iPad's bypass code, for the users in activation_lock.allowed_users. Audited, with
    the outcome but never the code. Raises EscrowError (exit 2)."""
    from core.inventory import normalise_serial

    serial = normalise_serial(serial)
    actor = actor or audit.current_actor()

    def refuse(why: str) -> EscrowError:
        audit.record(db, "ipad.activation_lock.show", serial, {"result": f"refused: {why}"}, actor=actor)
        return EscrowError(f"activation lock code of {serial}: {why}")

    if actor not in config.activation_lock.allowed_users:
        raise refuse(f"user {actor!r} is not in activation_lock.allowed_users")
    with db.session() as s:
        row = s.scalars(select(ActivationLockEscrow).where(ActivationLockEscrow.serial == serial)
                        .order_by(ActivationLockEscrow.stored_at.desc())).first()
        if row is None:
            raise refuse("no bypass code escrowed (send ActivationLockBypassCode: "
                         "`werne ipad activation-lock escrow SERIAL`)")
        ciphertext, key_id, stored_at = row.ciphertext, row.key_id, row.stored_at
    key = load_key(config)
    if key.key_id != key_id:
        raise refuse(f"escrowed with another key (key id {key_id}, configured {key.key_id})")
    try:
        code = key.fernet.decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise refuse("the stored ciphertext does not decrypt with the configured key") from None
    audit.record(db, "ipad.activation_lock.show", serial,
                 {"result": "shown", "stored_at": stored_at.isoformat() if stored_at else None}, actor=actor)
    return code


def request_codes(ctx: Any, school: str | None = None, serials: tuple[str, ...] = (),
                  max_devices: int | None = None, deadline_s: float | None = None) -> Any:
    """Send ActivationLockBypassCode (the webhook escrows the answers); an audited ipad action."""
    from ipad import commands
    from ipad.ops import _audited, _send_and_wait, _Sent, check_blast_radius, select_targets

    targets = select_targets(ctx, school, serials)
    check_blast_radius(ctx, sum(1 for t in targets if t.enrollment_id), max_devices, "activation-lock escrow")
    deadline = ctx.config.mdm.query_deadline_s if deadline_s is None else deadline_s
    job = _Sent(commands.activation_lock_bypass_code(), targets)
    return _audited(ctx, "activation_lock.escrow", targets,
                    lambda: _send_and_wait(ctx, "activation-lock escrow", [job], targets, deadline))
