"""WireGuard public keys: validation (base64 of exactly 32 bytes) and duplicate detection.

Only public keys ever reach the controller. A key is refused when it is malformed, when another
peer (or the gateway) already uses it, or when it was retired by a rotation or revocation.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

from provisioning.vpn.errors import PublicKeyError

# 32 bytes in standard base64: 43 characters from the alphabet and one '=' of padding.
_KEY_RE = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")


def validate_public_key(raw: str | bytes | None, host: str) -> str:
    """Return the key as text if it is base64 of 32 bytes; else raise PublicKeyError naming the host."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            raise PublicKeyError(f"{host}: returned a malformed public key (not ASCII)") from None
    key = (raw or "").strip()
    if not key:
        raise PublicKeyError(f"{host}: returned no public key")
    if not _KEY_RE.match(key):
        # Say what is wrong without echoing long garbage (it could be anything a broken host sends).
        raise PublicKeyError(f"{host}: returned a malformed public key ({len(key)} characters, "
                             "expected base64 of 32 bytes)")
    try:
        decoded = base64.b64decode(key, validate=True)
    except binascii.Error:
        raise PublicKeyError(f"{host}: returned a malformed public key (not base64)") from None
    if len(decoded) != 32:  # pragma: no cover - the pattern already pins the length
        raise PublicKeyError(f"{host}: returned a malformed public key ({len(decoded)} bytes, expected 32)")
    return key


def check_duplicates(new_keys: Mapping[str, str], in_use: Mapping[str, str],
                     retired: Iterable[str] = ()) -> None:
    """Refuse keys that two hosts share, that another host (or the gateway) holds, or that were retired.

    new_keys: host -> key just returned; in_use: key -> holder for every key currently admitted.
    A host re-reporting its own current key is fine.
    """
    retired_set = set(retired)
    seen: dict[str, str] = {}
    problems: list[str] = []
    for host, key in sorted(new_keys.items()):
        if key in seen:
            problems.append(f"{host}: returned the same public key as {seen[key]}")
            continue
        seen[key] = host
        holder = in_use.get(key)
        if holder is not None and holder != host:
            problems.append(f"{host}: returned a public key already used by {holder}")
        elif holder is None and key in retired_set:
            problems.append(f"{host}: returned a public key that was retired (rotated out or revoked)")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PublicKeyError(problems[0] + more)
