"""Signed evidence: detached signatures over reports and over the hash-chain head, with the city's key.

The key is a PEM file named by `compliance.signing_key_file` (RSA of 2048 bits or more, or EC on
P-256/P-384/P-521). A signature is the raw PKCS#1 v1.5 (RSA) or DER ECDSA signature over SHA-256
of the bytes, what `openssl dgst -sha256 -sign` makes, so anyone verifies it with the public key:

    openssl dgst -sha256 -verify city-signing.pub.pem -signature report.oscal.json.sig report.oscal.json

The chain head is a short text statement (run id and record hash, audit event id and record hash)
signed when a run completes or its OSCAL document is written, and stored in `chain_signatures`;
`werne compliance verify` checks each stored statement against the database and its signature
against the key, so a database rewritten with freshly computed hashes no longer verifies. The
key's bytes never reach a message, a log or an exception.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import select

from compliance.errors import SigningError
from compliance.models import ChainSignature, ComplianceRun
from core.db import Database
from core.errors import SecretError
from core.files import read_regular_file
from core.models import AuditEvent
from core.secrets import read_secret

STATEMENT_HEADER = "werne chain head v1"
MIN_RSA_BITS = 2048
EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _check_kind(key: Any, path: Path) -> None:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise SigningError(f"signing key {path}: RSA key of {key.key_size} bits; use {MIN_RSA_BITS} or more")
        return
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            raise SigningError(f"signing key {path}: EC curve {key.curve.name}; use P-256, P-384 or P-521")
        return
    raise SigningError(f"signing key {path}: a {type(key).__name__.lstrip('_')}; use an RSA or EC (P-256) key, "
                       "which openssl dgst can verify")


def key_id(public: PublicKey) -> str:
    """SHA-256 of the public key's DER SubjectPublicKeyInfo: `openssl pkey -pubin -outform DER | sha256sum`."""
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _read(path: Path, what: str) -> bytes:
    try:
        return read_regular_file(path, limit=1 << 20)
    except FileNotFoundError:
        raise SigningError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise SigningError(f"{what} {path}: cannot read: {e.strerror}") from None


@dataclass(frozen=True)
class Signer:
    """A loaded private key: signs bytes; never shows the key."""

    path: Path
    _key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"Signer({self.path}, key {self.key_id[:16]})"

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))


def load_signer(path: Path) -> Signer:
    """The private key at `path` (PEM, unencrypted: the file's mode protects it); raises SigningError."""
    try:
        # core.secrets: a pasted key is never named, a world-readable key file is warned about.
        raw = read_secret(file=path, what="signing key").reveal().encode("ascii", "replace")
    except SecretError as e:
        raise SigningError(str(e)) from None
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except TypeError:
        raise SigningError(f"signing key {path} is encrypted; werne needs it unencrypted (mode 0600)") from None
    except ValueError:
        raise SigningError(f"signing key {path} is not a PEM private key") from None
    _check_kind(key, path)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return Signer(path, key)


def load_public_key(path: Path) -> PublicKey:
    """A public key to verify with, from a PEM public key, certificate or private key file."""
    raw = _read(path, "verification key")
    key: Any = None
    for loader in (serialization.load_pem_public_key, x509.load_pem_x509_certificate):
        try:
            loaded = loader(raw)
        except ValueError:
            continue
        key = loaded.public_key() if isinstance(loaded, x509.Certificate) else loaded
        break
    if key is None:
        try:
            key = serialization.load_pem_private_key(raw, password=None).public_key()
        except (TypeError, ValueError):
            raise SigningError(f"verification key {path} is no PEM public key, certificate or private key") from None
    _check_kind(key, path)
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


def verify_signature(public: PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- the chain head ------------------------------------------------------------------------


def head_statement(run_id: int, run_hash: str, audit_id: int | None, audit_hash: str | None) -> bytes:
    """The signed text: what the chains' heads were when it was signed."""
    lines = [STATEMENT_HEADER, f"run: {run_id}", f"run_record_hash: {run_hash}",
             f"audit_event: {audit_id if audit_id is not None else 'none'}",
             f"audit_record_hash: {audit_hash or 'none'}"]
    return ("\n".join(lines) + "\n").encode("ascii")


def parse_statement(text: bytes) -> dict[str, str]:
    lines = text.decode("ascii", "replace").splitlines()
    if not lines or lines[0] != STATEMENT_HEADER:
        return {}
    return dict(line.split(": ", 1) for line in lines[1:] if ": " in line)


@dataclass(frozen=True)
class SignedHead:
    """A stored, signed chain head."""

    run_id: int
    statement: bytes
    signature: bytes
    key_id: str


def sign_head(db: Database, signer: Signer, run_id: int) -> SignedHead:
    """Sign the chain head as of run `run_id` (and the newest chained audit event) and store it;
    a head already signed with this key is returned as stored."""
    with db.session() as s:
        run = s.get(ComplianceRun, run_id)
        if run is None or run.status != "complete" or not run.record_hash:
            raise SigningError(f"run {run_id} is not a complete run; nothing to sign")
        stored = s.scalars(select(ChainSignature).where(ChainSignature.run_id == run_id,
                                                        ChainSignature.key_id == signer.key_id)).first()
        if stored is not None:
            return SignedHead(run_id, stored.statement.encode("ascii"), base64.b64decode(stored.signature),
                              stored.key_id)
        audit = s.execute(select(AuditEvent.id, AuditEvent.record_hash)
                          .where(AuditEvent.record_hash.is_not(None))
                          .order_by(AuditEvent.id.desc()).limit(1)).first()
        statement = head_statement(run_id, run.record_hash, audit[0] if audit else None,
                                   audit[1] if audit else None)
        signature = signer.sign(statement)
        s.add(ChainSignature(run_id=run_id, signed_at=datetime.now(UTC), statement=statement.decode("ascii"),
                             signature=base64.b64encode(signature).decode("ascii"), key_id=signer.key_id))
    return SignedHead(run_id, statement, signature, signer.key_id)


def sign_run_head(key_file: Path, db: Database, run_id: int) -> str | None:
    """Sign run `run_id`'s chain head with the key in `key_file`; None when done, else why not
    (a bad key must not fail the run that was just stored)."""
    try:
        sign_head(db, load_signer(key_file), run_id)
    except SigningError as e:
        return f"run {run_id}: chain head not signed: {e}"
    return None


def sign_file(signer: Signer, path: Path) -> Path:
    """Write `<path>.sig`, the detached signature of the file's bytes; returns its path."""
    sig = path.with_name(path.name + ".sig")
    tmp = sig.with_name(f".{sig.name}.tmp")
    tmp.write_bytes(signer.sign(path.read_bytes()))
    tmp.replace(sig)
    return sig


def verify_heads(db: Database, public: PublicKey | None) -> tuple[int, list[str]]:
    """Check every stored signed head: its statement against the database, its signature against
    `public` (None: signatures are not checked, only the statements). A complete run that finished
    after the first signature was made, and has none of its own, is named too: runs are signed as
    they complete. Returns (heads checked, problems)."""
    problems: list[str] = []
    with db.session() as s:
        heads = list(s.scalars(select(ChainSignature).order_by(ChainSignature.run_id, ChainSignature.id)))
        rows = s.execute(select(ComplianceRun.id, ComplianceRun.record_hash, ComplianceRun.finished_at)
                         .where(ComplianceRun.status == "complete")).all()
        runs = {r: h for r, h, _ in rows}
        for h in heads:
            problems += _check_head(s, h, runs, public)
    signed = {h.run_id for h in heads}
    if heads:
        since = min(h.signed_at for h in heads)
        problems += [f"run {r}: chain head not signed (runs are signed since {since:%Y-%m-%d %H:%M} UTC)"
                     for r, _, finished in sorted(rows) if r not in signed and finished and finished > since]
    return len(heads), problems


def _check_head(s: Any, h: ChainSignature, runs: dict[int, str | None], public: PublicKey | None) -> list[str]:
    facts = parse_statement(h.statement.encode("ascii", "replace"))
    where = f"signed head of run {h.run_id}"
    if not facts or facts.get("run") != str(h.run_id):
        return [f"{where}: the statement is not one werne wrote"]
    out = []
    if runs.get(h.run_id) != facts.get("run_record_hash"):
        out.append(f"{where}: run {h.run_id}'s record hash in the database differs from the signed one")
    audit_id = facts.get("audit_event", "none")
    if audit_id != "none":
        stored = s.scalar(select(AuditEvent.record_hash).where(AuditEvent.id == int(audit_id)))
        if stored != facts.get("audit_record_hash"):
            out.append(f"{where}: audit event {audit_id} is missing or differs from the signed one")
    if public is not None:
        if h.key_id != key_id(public):
            out.append(f"{where}: signed with another key ({h.key_id[:16]}), not the configured one")
        elif not verify_signature(public, h.statement.encode("ascii"), base64.b64decode(h.signature)):
            out.append(f"{where}: signature does not verify")
    return out


def verify_file(public: PublicKey, path: Path) -> str | None:
    """None when `<path>.sig` is a valid signature of `path`, else the problem in words."""
    sig = path.with_name(path.name + ".sig")
    try:
        data, signature = path.read_bytes(), sig.read_bytes()
    except OSError as e:
        return f"{e.filename}: cannot read: {e.strerror}"
    return None if verify_signature(public, data, signature) else f"{path}: signature {sig.name} does not verify"
