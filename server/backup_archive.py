"""The backup archive's format: a gzip'd tar with a manifest, encrypted with AES-256-GCM under a key
derived from the password by scrypt (both from `cryptography`, no scheme of our own).

    WERNE-BACKUP\\n | 4 bytes: header length | header (JSON, clear text) | ciphertext

The header names the format, the scrypt parameters and salt, the nonce, the ciphertext's length
and a key check (a short known text encrypted under the same key with its own nonce), so that a
wrong password is told apart from an altered archive. The whole header is the ciphertext's
associated data: changing a byte of it, or of the ciphertext, fails the GCM tag. The plaintext is
a tar.gz whose first member is manifest.json: site, werne version, schema revisions and, per
entry, its member name, original path, owner, group, mode, size and SHA-256.

The payload is encrypted in one piece, so an archive is limited to MAX_PAYLOAD (2 GiB, the
library's limit for one AES-GCM message); a city's MDM server stays far below it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from core.secrets import Secret
from server.errors import ArchiveRefused

MAGIC = b"WERNE-BACKUP\n"
FORMAT = 1
MANIFEST = "manifest.json"
# scrypt: 2^15 x 8 x 128 bytes = 32 MiB and about 0.1 s per derivation (RFC 7914's interactive
# setting); the parameters travel in the header, so a later werne can raise them.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MIN_PASSWORD = 12
MAX_PAYLOAD = 2**31 - 1 - 16
MAX_HEADER = 64 * 1024
_KEY_CHECK = b"werne backup key check"


@dataclass(frozen=True)
class Entry:
    """One file (or directory) in the archive, and what it was on the server."""

    member: str
    kind: str  # file, dir, sqlite, postgresql
    path: str  # where it lives on the server (for postgresql: the database's name)
    what: str  # which setting or part it is, for people
    sha256: str = ""
    size: int = 0
    mode: int = 0o600
    owner: str = "root"
    group: str = "root"


@dataclass
class Manifest:
    """What an archive holds: the site, the versions, every entry with its checksum."""

    site: str
    werne_version: str
    created: str
    host: str
    schema: dict[str, str | None] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    trees: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        try:
            entries = [Entry(**e) for e in data["entries"]]
            return cls(site=str(data["site"]), werne_version=str(data["werne_version"]),
                       created=str(data["created"]), host=str(data["host"]), schema=dict(data.get("schema") or {}),
                       entries=entries, trees=[str(t) for t in data.get("trees") or []],
                       left_out=[str(t) for t in data.get("left_out") or []], format=int(data["format"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ArchiveRefused(f"the archive's manifest is not readable ({e.__class__.__name__})") from None


def check_password(password: Secret) -> None:
    if len(password.reveal()) < MIN_PASSWORD:
        raise ArchiveRefused(f"the backup password ({password.source}) is shorter than {MIN_PASSWORD} characters")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    return base64.b64decode(str(text), validate=True)


def _derive(password: Secret, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.reveal().encode("utf-8"))


def encrypt(payload: bytes, password: Secret) -> bytes:
    """The archive's bytes: header and AES-256-GCM ciphertext of payload."""
    if len(payload) > MAX_PAYLOAD:
        raise ArchiveRefused(f"the backup is {len(payload) >> 20} MiB, more than one archive holds (2 GiB)")
    salt, nonce, check_nonce = os.urandom(16), os.urandom(12), os.urandom(12)
    key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    aead = AESGCM(key)
    header = {
        "format": FORMAT, "cipher": "AES-256-GCM",
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "nonce": _b64(nonce), "check_nonce": _b64(check_nonce),
        "check": _b64(aead.encrypt(check_nonce, _KEY_CHECK, b"key-check")),
        "length": len(payload) + 16,
    }
    head = json.dumps(header, sort_keys=True).encode("utf-8")
    prefix = MAGIC + struct.pack(">I", len(head)) + head
    return prefix + aead.encrypt(nonce, payload, prefix)


def decrypt(data: bytes, password: Secret) -> bytes:
    """The payload of an archive's bytes; ArchiveRefused for anything but the right archive and password."""
    if not data.startswith(MAGIC):
        raise ArchiveRefused("not a werne backup archive")
    if len(data) < len(MAGIC) + 4:
        raise ArchiveRefused("the archive is truncated (no header)")
    (head_len,) = struct.unpack(">I", data[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4 + head_len
    if head_len > MAX_HEADER or len(data) < start:
        raise ArchiveRefused("the archive is truncated or altered (its header is incomplete)")
    try:
        header = json.loads(data[len(MAGIC) + 4:start])
        if header.get("format") != FORMAT or header.get("cipher") != "AES-256-GCM":
            raise ArchiveRefused(f"the archive's format {header.get('format')!r} is not one this werne reads")
        kdf = header["kdf"]
        if kdf.get("name") != "scrypt":
            raise ArchiveRefused("the archive's key derivation is not scrypt")
        n, r, p, length = int(kdf["n"]), int(kdf["r"]), int(kdf["p"]), int(header["length"])
        salt, nonce = _unb64(kdf["salt"]), _unb64(header["nonce"])
        check, check_nonce = _unb64(header["check"]), _unb64(header["check_nonce"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ArchiveRefused("the archive's header is damaged") from None
    if not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ArchiveRefused("the archive's key derivation parameters are out of range (altered)")
    body = data[start:]
    if len(body) < length:
        raise ArchiveRefused(f"the archive is truncated ({len(body)} of {length} bytes of its content)")
    if len(body) > length:
        raise ArchiveRefused("the archive has data after its end (altered)")
    aead = AESGCM(_derive(password, salt, n, r, p))
    try:
        aead.decrypt(check_nonce, check, b"key-check")
    except InvalidTag:
        raise ArchiveRefused(f"wrong password for this archive ({password.source})") from None
    try:
        return aead.decrypt(nonce, body, data[:start])
    except InvalidTag:
        raise ArchiveRefused("the archive was altered (its authentication tag does not match)") from None


# ---------------------------------------------------------------- the payload: tar.gz + manifest --


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pack(manifest: Manifest, sources: dict[str, Path]) -> bytes:
    """The payload: manifest.json, then each entry's file (sources: member -> local file)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=6) as tar:
        text = json.dumps(manifest.to_dict(), indent=1, sort_keys=True).encode("utf-8")
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode = len(text), 0o600
        tar.addfile(info, io.BytesIO(text))
        for entry in manifest.entries:
            if entry.kind == "dir":
                continue
            info = tarfile.TarInfo(entry.member)
            info.size, info.mode = entry.size, 0o600
            with sources[entry.member].open("rb") as f:
                tar.addfile(info, f)
    return buf.getvalue()


def _safe_member(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and p.parts[0] in ("files", "db")


def members(payload: bytes) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    """The payload's members with their bytes, in order; only regular files are accepted."""
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
            for info in tar:
                if not info.isreg():
                    raise ArchiveRefused(f"the archive holds {info.name!r}, which is not a regular file")
                f = tar.extractfile(info)
                assert f is not None
                yield info, f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ArchiveRefused(f"the archive's content is damaged ({e.__class__.__name__})") from None


def unpack(payload: bytes, dest: Path | None) -> Manifest:
    """Check every member against the manifest (names, sizes, SHA-256, nothing missing or extra);
    with dest, write each member below it (dest/<member>, mode 0600). Returns the manifest."""
    manifest: Manifest | None = None
    seen: set[str] = set()
    expected: dict[str, Entry] = {}
    for info, data in members(payload):
        if manifest is None:
            if info.name != MANIFEST:
                raise ArchiveRefused("the archive's first member is not its manifest")
            try:
                manifest = Manifest.from_dict(json.loads(data))
            except ValueError:
                raise ArchiveRefused("the archive's manifest is not JSON") from None
            if manifest.format != FORMAT:
                raise ArchiveRefused(f"the archive's manifest format {manifest.format} is not one this werne reads")
            expected = {e.member: e for e in manifest.entries if e.kind != "dir"}
            continue
        entry = expected.get(info.name)
        if entry is None or not _safe_member(info.name) or info.name in seen:
            raise ArchiveRefused(f"the archive holds {info.name[:120]!r}, which its manifest does not name")
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ArchiveRefused(f"{entry.path}: its checksum does not match the manifest")
        seen.add(info.name)
        if dest is not None:
            target = dest / info.name
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    if manifest is None:
        raise ArchiveRefused("the archive is empty")
    missing = sorted(set(expected) - seen)
    if missing:
        raise ArchiveRefused(f"{expected[missing[0]].path}: named in the manifest, missing from the archive")
    return manifest
