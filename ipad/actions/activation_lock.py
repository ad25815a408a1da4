"""Activation Lock escrow: each supervised iPad's bypass code, stored encrypted at rest.

The code arrives as the answer to ActivationLockBypassCode. The webhook parser takes it out of the
answer before anything is stored (ipad.webhook.parse: `ParsedEvent.secret`), and the registry
observer made here (`escrow_observers`, given to the webhook's registry when it is built) encrypts it
(Fernet: AES-128-CBC + HMAC-SHA256) with the key of activation_lock.key_file in the same
transaction. Only `show_code` decrypts, for the login names in activation_lock.allowed_users, and
every attempt is audited; the code is never logged, reported, put in an exception or stored in plain
text.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from core import escrow
from core.config import Config
from core.db import Database, upsert
from core.escrow import EscrowKey
from core.inventory import normalise_serial
from core.models import utcnow
from core.secrets import Secret
from ipad import commands
from ipad.dispatch import ActionReport, IPadContext, Job, audited, check_blast_radius, select_targets, send_and_wait
from ipad.errors import EscrowError
from ipad.models import ActivationLockEscrow
from ipad.store.events import ParsedEvent
from ipad.store.messages import Batch, DeviceMessages
from ipad.store.observers import Observer

REQUEST_TYPE = "ActivationLockBypassCode"


WHAT = "Activation Lock escrow key"
HINT = "`werne ipad activation-lock key` makes one"
new_key = escrow.new_key


def load_key(config: Config) -> EscrowKey:
    """The escrow key from activation_lock.key_file (or its variable). Raises EscrowError."""
    al = config.activation_lock
    return escrow.load_key(al.key_file, al.key_env, WHAT, HINT, EscrowError)


def key_of(secret: Secret) -> EscrowKey:
    """The escrow key a secret holds. Raises EscrowError when it is not a Fernet key."""
    return escrow.key_of(secret, WHAT, HINT, EscrowError)


ESCROW_COLUMNS = ("serial", "ciphertext", "key_id", "command_uuid", "stored_at")


def store_code(conn: Connection, key: EscrowKey, enrollment_id: str, serial: str | None, command_uuid: str | None,
               code: str) -> None:
    """Encrypt and store (or replace) one device's bypass code, inside the caller's transaction."""
    row = {
        "enrollment_id": enrollment_id,
        "serial": serial,
        "ciphertext": key.encrypt(code),
        "key_id": key.key_id,
        "command_uuid": command_uuid,
        "stored_at": utcnow(),
    }
    conn.execute(upsert(ActivationLockEscrow.__table__, conn.dialect.name, ("enrollment_id",), ESCROW_COLUMNS), row)


def escrow_configured(config: Config) -> bool:
    """This site escrows bypass codes (activation_lock.key_file, or its key variable, is set)."""
    return escrow.configured(config.activation_lock.key_file, config.activation_lock.key_env)


def escrow_key(config: Config) -> EscrowKey | None:
    """The escrow key where the site escrows bypass codes, else None. Raises EscrowError for a bad key."""
    return load_key(config) if escrow_configured(config) else None


class BypassCodeEscrow(DeviceMessages):
    """The registry observer that escrows each acknowledged ActivationLockBypassCode answer, encrypted
    with the key, in the webhook batch's transaction (the parser took the code out of the answer)."""

    keeps_secrets = True

    def __init__(self, key: EscrowKey):
        self.key = key

    def command_and_report_results(self, batch: Batch, e: ParsedEvent) -> None:
        if e.secret is not None and e.command_uuid and e.acknowledged:
            store_code(batch.conn, self.key, e.enrollment_id, batch.current(e, "serial"), e.command_uuid, e.secret)


def escrow_observers(config: Config) -> list[Observer]:
    """What a registry that receives the webhook needs to escrow bypass codes: the escrow with the
    configured key, or nothing (codes are then dropped with a warning). Raises EscrowError for a bad key."""
    key = escrow_key(config)
    return [BypassCodeEscrow(key)] if key is not None else []


def escrowed_serials(db: Database) -> set[str]:
    """Serials whose bypass code is escrowed (for the compliance rule ios-activation-lock-escrowed)."""
    with db.session() as s:
        return {x for x in s.scalars(select(ActivationLockEscrow.serial)) if x}


def show_code(config: Config, db: Database, serial: str, actor: str | None = None) -> str:
    """Decrypt one iPad's bypass code, for the users in activation_lock.allowed_users (judged by the
    real uid unless `actor` is given: core.actor.real_user). Audited, with the outcome but never
    the code. Raises EscrowError (exit 2)."""
    serial = normalise_serial(serial)

    def fetch() -> escrow.Escrowed | None:
        with db.session() as s:
            row = s.scalars(select(ActivationLockEscrow).where(ActivationLockEscrow.serial == serial)
                            .order_by(ActivationLockEscrow.stored_at.desc())).first()
            return None if row is None else escrow.Escrowed(row.ciphertext, row.key_id, row.stored_at)

    return escrow.reveal(db, action="ipad.activation_lock.show", target=serial, what="activation lock code",
                         allowed=config.activation_lock.allowed_users, setting="activation_lock.allowed_users",
                         fetch=fetch, missing="no bypass code escrowed (send ActivationLockBypassCode: "
                         "`werne ipad activation-lock escrow SERIAL`)", load=lambda: load_key(config),
                         actor=actor, error=EscrowError)


def request_codes(ctx: IPadContext, school: str | None = None, serials: tuple[str, ...] = (),
                  max_devices: int | None = None, deadline_s: float | None = None) -> ActionReport:
    """Send ActivationLockBypassCode (the webhook escrows the answers); an audited ipad action."""
    targets = select_targets(ctx, school, serials)
    check_blast_radius(ctx, sum(1 for t in targets if t.enrollment_id), max_devices, "activation-lock escrow")
    deadline = ctx.config.mdm.query_deadline_s if deadline_s is None else deadline_s
    job = Job(commands.activation_lock_bypass_code(), targets)
    return audited(ctx, "activation_lock.escrow", targets,
                   lambda: send_and_wait(ctx, "activation-lock escrow", [job], targets, deadline))
