"""Escrow of secrets werne keeps for IT staff: encrypted at rest, shown only to listed users, audited.

One mechanism for the iPads' Activation Lock bypass codes (ipad.actions.activation_lock) and the
laptops' LUKS recovery keys (provisioning.disk.escrow): Fernet (AES-128-CBC + HMAC-SHA256) with a
key from a secret file or variable; each ciphertext is stored beside the id of the key that made it
(a digest), so a rotated key is recognised instead of failing obscurely. `reveal` is the one way
back to plain text: for the login names a setting lists, judged by who really runs the process
(core.actor.real_user: the sudo caller under sudo, never an environment variable anyone can set),
and every attempt, shown or refused, is in the audit
trail without the secret.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from core import audit
from core.actor import real_user
from core.db import Database
from core.errors import InputError
from core.secrets import Secret, read_secret


class EscrowKeyError(InputError):
    """An escrow key or an escrowed secret cannot be used (exit 2)."""


ErrorType = Callable[[str], Exception]


@dataclass(frozen=True)
class EscrowKey:
    """The Fernet key, and its id (a digest, stored beside each ciphertext)."""

    fernet: Fernet
    key_id: str

    def __repr__(self) -> str:
        return f"EscrowKey(***, key_id={self.key_id!r})"

    def encrypt(self, text: str) -> str:
        return self.fernet.encrypt(text.encode()).decode()


def new_key() -> str:
    """A fresh Fernet key (urlsafe base64, 32 bytes) for an escrow key file."""
    return Fernet.generate_key().decode()


def key_of(secret: Secret, what: str, hint: str, error: ErrorType = EscrowKeyError) -> EscrowKey:
    """The escrow key a secret holds. Raises `error` when it is not a Fernet key (never naming it)."""
    try:
        fernet = Fernet(secret.reveal().encode())
    except ValueError:
        raise error(f"{what} ({secret.source}) is not a Fernet key (32 url-safe base64 bytes; {hint})") from None
    return EscrowKey(fernet, hashlib.sha256(secret.reveal().encode()).hexdigest()[:16])


def configured(key_file: Path | None, key_env: str | None) -> bool:
    """An escrow key is set: its file, or its variable in the environment."""
    return key_file is not None or bool(key_env and os.environ.get(key_env))


def load_key(key_file: Path | None, key_env: str | None, what: str, hint: str,
             error: ErrorType = EscrowKeyError) -> EscrowKey:
    """The escrow key from its variable or file. Raises SecretError, or `error` for a bad key."""
    return key_of(read_secret(file=key_file, env=key_env, what=what), what, hint, error)


@dataclass(frozen=True)
class Escrowed:
    """One stored ciphertext, as `reveal` needs it."""

    ciphertext: str
    key_id: str
    stored_at: datetime | None


def reveal(db: Database, *, action: str, target: str, what: str, allowed: list[str], setting: str,
           fetch: Callable[[], Escrowed | None], missing: str, load: Callable[[], EscrowKey],
           actor: str | None = None, error: ErrorType = EscrowKeyError) -> str:
    """Decrypt one escrowed secret for a listed user. Every attempt goes to the audit trail as
    `action` on `target` with its result ("shown" or "refused: why"), never the secret. Raises
    `error` ("<what> of <target>: <why>") when the user is not in `allowed` (the setting named
    `setting`), nothing is escrowed (`missing` says what to do), or the key does not fit."""
    actor = actor or real_user()

    def refuse(why: str) -> Exception:
        audit.record(db, action, target, {"result": f"refused: {why}"}, actor=actor)
        return error(f"{what} of {target}: {why}")

    if actor not in allowed:
        raise refuse(f"user {actor!r} is not in {setting}")
    row = fetch()
    if row is None:
        raise refuse(missing)
    key = load()
    if key.key_id != row.key_id:
        raise refuse(f"escrowed with another key (key id {row.key_id}, configured {key.key_id})")
    try:
        plain = key.fernet.decrypt(row.ciphertext.encode()).decode()
    except InvalidToken:
        raise refuse("the stored ciphertext does not decrypt with the configured key") from None
    audit.record(db, action, target,
                 {"result": "shown", "stored_at": row.stored_at.isoformat() if row.stored_at else None}, actor=actor)
    return plain


def decrypt(key: EscrowKey, row: Escrowed, what: str, error: ErrorType = EscrowKeyError) -> str:
    """Plain text of a stored ciphertext for werne's own use (a test unlock), without the user gate.
    Raises `error` when the key is another one or the ciphertext does not decrypt."""
    if key.key_id != row.key_id:
        raise error(f"{what}: escrowed with another key (key id {row.key_id}, configured {key.key_id})")
    try:
        return key.fernet.decrypt(row.ciphertext.encode()).decode()
    except InvalidToken:
        raise error(f"{what}: the stored ciphertext does not decrypt with the configured key") from None
