"""LUKS recovery keys: made and escrowed by werne, added to each laptop's volume by the provisioning
run, and test-unlocked at every run.

Flow around a provisioning run (provisioning.runner):
  1. `provision_extravars`: for each laptop without an escrowed key, make one (48 digits in groups,
     typeable at the boot prompt) and escrow it first, encrypted (core.escrow, the Activation Lock
     codes' mechanism), state "pending"; the run gets only ciphertexts, and the key file's path;
  2. the role (playbooks/roles/luks_recovery_key) decrypts on the controller inside Ansible (lookup
     plugin werne_escrow) and hands the key to playbooks/library/werne_luks.py as a no_log
     parameter: the module test-unlocks (`cryptsetup open --test-passphrase`, no mount), and adds
     the keyslot with the installer's enrolment key where the escrowed key does not open the volume
     yet. The key never reaches argv, the extravars, the artifacts or a log;
  3. `record_results`: what each laptop said: verified (with its keyslot), no LUKS volume (reported,
     not a failure), or the escrowed key no longer opens it (the rule lx-recovery-key fails).
A laptop behind an execution node gets its key the same way, but the lookup runs on the node, which
must never hold the escrow key: `rewrap_for_node` re-encrypts that node's laptops' keys (only
theirs) under a fresh key made for that one job, which travels in the job folder and is deleted on
both sides after the job.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select

from core import escrow
from core.config import Config
from core.db import Database
from core.escrow import EscrowKey
from core.models import utcnow
from provisioning.disk.models import KEY_ADDED, KEY_PENDING, LaptopRecoveryKey
from provisioning.errors import RecoveryKeyError

WHAT = "recovery key escrow key"
HINT = "`werne laptop recovery-key new-key` makes one"
# The role's task whose result werne reads (playbooks/roles/luks_recovery_key).
RECOVERY_KEY_TASK = "Test-unlock the LUKS volume with the escrowed recovery key"
GROUPS, DIGITS = 8, 6
# The extra vars the role reads (playbooks/roles/luks_recovery_key).
KEYS_VAR, KEY_FILE_VAR = "werne_recovery_keys", "werne_recovery_key_file"
# The one-job key's name in a node's job folder; the node's worker points KEY_FILE_VAR at it.
NODE_JOB_KEY_FILE = "recovery.key"


def new_recovery_key() -> str:
    """48 random digits in 8 groups (about 159 bits): typeable at the boot prompt, like BitLocker's."""
    return "-".join(f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}" for _ in range(GROUPS))


def escrow_configured(config: Config) -> bool:
    rk = config.recovery_keys
    return escrow.configured(rk.key_file, rk.key_env)


def load_key(config: Config) -> EscrowKey:
    """The escrow key from recovery_keys.key_file (or its variable). Raises RecoveryKeyError/SecretError."""
    rk = config.recovery_keys
    return escrow.load_key(rk.key_file, rk.key_env, WHAT, HINT, RecoveryKeyError)


def provision_extravars(config: Config, db: Database, hosts: list[str], identities: dict[str, str | None],
                        check_mode: bool = False) -> dict[str, Any]:
    """Extra vars for the luks_recovery_key role: each laptop's escrowed key as ciphertext (a new one
    escrowed first where none is), and the key file the role's lookup decrypts with. {} where the
    site escrows no recovery keys (the role then says so and does nothing)."""
    if not escrow_configured(config) or not hosts:
        return {}
    rk = config.recovery_keys
    if rk.key_file is None:
        raise RecoveryKeyError("recovery_keys.key_file must be set: the provisioning run's Ansible decrypts "
                               f"the recovery keys with it (${rk.key_env} does not reach Ansible)")
    key = load_key(config)
    out: dict[str, dict[str, Any]] = {}
    with db.session() as s:
        rows = {r.host: r for r in s.scalars(select(LaptopRecoveryKey).where(LaptopRecoveryKey.host.in_(hosts)))}
        for h in hosts:
            row = rows.get(h)
            if row is None:
                if check_mode:
                    continue  # a check run escrows nothing
                row = LaptopRecoveryKey(host=h, identity=identities.get(h), ciphertext=key.encrypt(new_recovery_key()),
                                        key_id=key.key_id, state=KEY_PENDING, created_at=utcnow())
                s.add(row)
            if row.key_id != key.key_id:
                raise RecoveryKeyError(f"the recovery key of {h} was escrowed with another key (key id {row.key_id}, "
                                       f"configured {key.key_id}): restore that key file")
            out[h] = {"ciphertext": row.ciphertext, "keyslot": row.keyslot}
    return {KEY_FILE_VAR: str(rk.key_file.expanduser().resolve()), KEYS_VAR: out}


def rewrap_for_node(config: Config, extravars: dict[str, Any], hosts: list[str]) -> tuple[dict[str, Any], bytes | None]:
    """A node's extra vars, and the one-job key for its job folder: the recovery keys of `hosts`
    (that node's laptops; the others' are left out) decrypted here and encrypted again under a
    fresh Fernet key, so the node can open nothing but what this job sends it and the escrow key
    never leaves this machine. Without recovery keys in the run: `extravars` unchanged, None."""
    if KEYS_VAR not in extravars:
        return extravars, None
    key = load_key(config)
    job_key = Fernet.generate_key()
    job_fernet = Fernet(job_key)
    rewrapped: dict[str, dict[str, Any]] = {}
    for h, entry in extravars[KEYS_VAR].items():
        if h not in hosts:
            continue
        try:
            plain = key.fernet.decrypt(str(entry["ciphertext"]).encode())
        except InvalidToken:
            raise RecoveryKeyError(f"the recovery key of {h} does not decrypt with the configured key") from None
        rewrapped[h] = {**entry, "ciphertext": job_fernet.encrypt(plain).decode()}
    # The node's worker sets the key file's path (its own copy of this job's key).
    out = {k: v for k, v in extravars.items() if k != KEY_FILE_VAR}
    return {**out, KEYS_VAR: rewrapped, KEY_FILE_VAR: NODE_JOB_KEY_FILE}, job_key


def record_results(db: Database, results: dict[str, dict[str, Any]], now: datetime | None = None) -> dict[str, str]:
    """Store what each laptop's test unlock said (the module result of RECOVERY_KEY_TASK, by host);
    returns host -> one line for the run's output."""
    now = now or utcnow()
    lines = {}
    with db.session() as s:
        for host, res in results.items():
            row = s.get(LaptopRecoveryKey, host)
            if row is None:
                continue
            row.checked_at = now
            detail = str(res.get("detail") or "")[:500]
            row.check_detail = detail
            if not res.get("luks"):
                row.check_result = "no-luks"
                lines[host] = f"no LUKS volume: {detail}"
            elif res.get("verified"):
                devs = res.get("devices") or []
                row.check_result, row.verified_at = "ok", now
                row.device = ",".join(str(d.get("device")) for d in devs)[:255] or None
                slots = {d.get("keyslot") for d in devs if d.get("keyslot") is not None}
                row.keyslot = next(iter(slots)) if len(slots) == 1 else row.keyslot
                if row.state != KEY_ADDED:
                    row.state, row.added_at = KEY_ADDED, now
                lines[host] = "recovery key " + ("added and verified" if res.get("added") else "verified")
            else:
                row.check_result = "failed"
                lines[host] = f"recovery key NOT verified: {detail}"
    return lines


def recovery_key_facts(db: Database, hosts: list[str]) -> dict[str, dict[str, Any]]:
    """The `recovery_key` facts the rule lx-recovery-key judges (never the key)."""
    def iso(d: datetime | None) -> str | None:
        return d.isoformat() if d else None

    with db.session() as s:
        rows = s.scalars(select(LaptopRecoveryKey).where(LaptopRecoveryKey.host.in_(hosts))).all()
        return {r.host: {"escrowed": True, "state": r.state, "key_id": r.key_id, "device": r.device,
                         "keyslot": r.keyslot, "verified_at": iso(r.verified_at), "checked_at": iso(r.checked_at),
                         "check_result": r.check_result, "check_detail": r.check_detail} for r in rows}


def show_recovery_key(config: Config, db: Database, host: str, actor: str | None = None) -> str:
    """Decrypt one laptop's recovery key for the users in recovery_keys.allowed_users (judged by the
    real uid: core.actor.real_user). Audited, never with the key. Raises RecoveryKeyError (exit 2)."""
    def fetch() -> escrow.Escrowed | None:
        with db.session() as s:
            row = s.get(LaptopRecoveryKey, host)
            return None if row is None else escrow.Escrowed(row.ciphertext, row.key_id, row.created_at)

    return escrow.reveal(db, action="laptop.recovery_key.show", target=host, what="recovery key",
                         allowed=config.recovery_keys.allowed_users, setting="recovery_keys.allowed_users",
                         fetch=fetch, missing="no recovery key escrowed (`werne laptop provision` escrows one)",
                         load=lambda: load_key(config), actor=actor, error=RecoveryKeyError)
