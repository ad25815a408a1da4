"""The pinned host keys: an OpenSSH known_hosts file in the state dir, shared by pre-flight and Ansible.

Pre-flight (paramiko) reads and, with --accept-new, extends it; Ansible's ssh reads the same file
with StrictHostKeyChecking=yes, so a laptop whose key changed is refused by both. Entries use
OpenSSH's names: `address` for port 22, `[address]:port` otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import paramiko

from core.locks import file_lock
from provisioning.errors import KnownHostsError

# Families: the algorithm names a server may offer for one stored key type.
_RSA_ALGORITHMS = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


def host_id(address: str, port: int) -> str:
    """The name OpenSSH looks a host up by in known_hosts."""
    return address if port == 22 else f"[{address}]:{port}"


def address_of(hid: str) -> str:
    """The address in a known_hosts host id (`address` or `[address]:port`)."""
    if hid.startswith("[") and "]:" in hid:
        return hid[1:hid.index("]:")]
    return hid


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def algorithms_for(key_types: Sequence[str], offered: Sequence[str]) -> list[str]:
    """Host key algorithms to offer so that the server shows a key of a pinned type."""
    wanted: list[str] = []
    for t in key_types:
        wanted += list(_RSA_ALGORITHMS) if t == "ssh-rsa" else [t]
    return [a for a in offered if a in wanted]


def same_key(a: paramiko.PKey, b: paramiko.PKey) -> bool:
    return a.get_name() == b.get_name() and a.asbytes() == b.asbytes()


class PinnedHostKeys:
    """The known_hosts file: look up, add and save pinned keys (writes are atomic and locked)."""

    def __init__(self, path: Path):
        self.path = path
        self._keys = paramiko.HostKeys()
        self.reload()

    def reload(self) -> None:
        self._keys = paramiko.HostKeys()
        if not self.path.exists():
            return
        try:
            self._keys.load(str(self.path))
        except (OSError, UnicodeDecodeError) as e:
            raise KnownHostsError(
                f"cannot read pinned host keys {self.path}: {e.__class__.__name__}"
            ) from None
        except paramiko.SSHException as e:
            raise KnownHostsError(f"pinned host keys {self.path} are damaged: {e}") from None

    def lookup(self, hid: str) -> dict[str, paramiko.PKey]:
        """Pinned keys of one host, by key type ({} when the host was never seen)."""
        entry = self._keys.lookup(hid)
        return dict(entry.items()) if entry is not None else {}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.path.with_name(self.path.name + ".lock"), wait=None, unusable_error=KnownHostsError):
            yield

    def add(self, new: dict[str, paramiko.PKey]) -> None:
        """Pin first-contact keys ({host id: key}), merged with what another process wrote meanwhile.

        Only hosts with no pinned key of that type are added: a changed key is never overwritten here.
        """
        if not new:
            return
        with self._locked():
            self.reload()
            for hid, key in sorted(new.items()):
                if key.get_name() not in self.lookup(hid):
                    self._keys.add(hid, key.get_name(), key)
            tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
            try:
                self._keys.save(str(tmp))
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise KnownHostsError(f"cannot write pinned host keys {self.path}: {e.strerror}") from None

    def remove_copies(self, in_scope: Callable[[str], bool], wanted: dict[str, set[tuple[str, str]]]) -> list[str]:
        """Unpin copied keys: a key pinned for a host id `in_scope` that is also pinned for a host id
        out of scope (as `provisioning.home.reach` pins a tunnel address with the office address's
        key), unless `wanted` ({host id: {(key type, base64)}}) still wants it there. Under the file
        lock, on the file as it is now; every other line stays as written. Returns the host ids
        removed."""
        if not self.path.exists():
            return []
        with self._locked():
            try:
                lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            except (OSError, UnicodeDecodeError) as e:
                raise KnownHostsError(f"cannot read pinned host keys {self.path}: {e.__class__.__name__}") from None
            entries = []  # (line index, host ids, key type, base64) of plain (not hashed, no marker) lines
            for n, line in enumerate(lines):
                f = line.split()
                if len(f) >= 3 and not f[0].startswith(("#", "@", "|")):
                    entries.append((n, f[0].split(","), f[1], f[2]))
            originals = {(t, b) for _, names, t, b in entries if not any(in_scope(h) for h in names)}
            drop, removed = set(), []
            for n, names, t, b in entries:
                if (all(in_scope(h) for h in names) and (t, b) in originals
                        and not any((t, b) in wanted.get(h, set()) for h in names)):
                    drop.add(n)
                    removed += names
            if drop:
                tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
                try:
                    tmp.write_text("".join(x for n, x in enumerate(lines) if n not in drop), encoding="utf-8")
                    os.chmod(tmp, 0o600)
                    os.replace(tmp, self.path)
                except OSError as e:
                    tmp.unlink(missing_ok=True)
                    raise KnownHostsError(f"cannot write pinned host keys {self.path}: {e.strerror}") from None
            self.reload()
        return sorted(removed)
