"""Who is running werne: the real user behind the process, for the audit trail and for the gates
that rest on a name (activation_lock.allowed_users).

Environment variables anyone can set (USER, LOGNAME, a WERNE_ACTOR) never decide it. The name is
the password database's name of the process's real uid. Under sudo that is root, and the person
is the sudo caller, which sudo (and run0, sudo-rs, pkexec since polkit 127) announces in SUDO_UID:
it is believed only when it can come from sudo, i.e. the process really runs as root (real and
effective uid 0: a user can set SUDO_UID in their own environment, but not become root without
sudo), and it agrees with what else the kernel and the system know: the audit login uid
(/proc/self/loginuid, set by pam_loginuid at login and kept across sudo) where one is set, and
SUDO_USER where sudo set it. As mkosi does, the name is looked up from the number, so a SUDO_USER
that names someone else is a mismatch, not a second opinion.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable, Mapping
from dataclasses import dataclass

LOGINUID_FILE = "/proc/self/loginuid"
# The kernel's "no login uid" ((uid_t)-1): a process not started from a login (a container, a
# service started by an init that sets none).
LOGINUID_UNSET = 2**32 - 1


@dataclass(frozen=True)
class ProcessIds:
    """What the kernel says about this process: real and effective uid, audit login uid (None: unset)."""

    uid: int
    euid: int
    loginuid: int | None


def read_loginuid(path: str = LOGINUID_FILE) -> int | None:
    """The audit login uid, or None where it is unset or cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if value == LOGINUID_UNSET else value


def this_process() -> ProcessIds:
    return ProcessIds(os.getuid(), os.geteuid(), read_loginuid())


def user_name(uid: int, lookup: Callable[[int], str] | None = None) -> str:
    """The password database's name of `uid`, else `uid N` (a uid without an entry, in a container)."""
    try:
        return (lookup or (lambda u: pwd.getpwuid(u).pw_name))(uid)
    except KeyError:
        return f"uid {uid}"


def sudo_caller(ids: ProcessIds, env: Mapping[str, str]) -> int | None:
    """The uid of the user who ran sudo, when the process is really under sudo (see the module
    docstring); None otherwise (not root, no or a malformed SUDO_UID, or a disagreeing login uid)."""
    if ids.uid != 0 or ids.euid != 0:
        return None
    raw = env.get("SUDO_UID", "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    caller = int(raw)
    if caller == 0 or caller >= LOGINUID_UNSET:
        return None
    if ids.loginuid is not None and ids.loginuid != caller:
        return None  # root logged in as root and set SUDO_UID itself, or su in between: not sudo's word
    return caller


def real_user(env: Mapping[str, str] | None = None, ids: ProcessIds | None = None,
              lookup: Callable[[int], str] | None = None) -> str:
    """The name of the person running this process: the sudo caller when really under sudo, else
    the name of the real uid. Never taken from USER, LOGNAME or another variable alone."""
    env = os.environ if env is None else env
    ids = ids or this_process()
    caller = sudo_caller(ids, env)
    if caller is not None:
        name = user_name(caller, lookup)
        claimed = env.get("SUDO_USER")
        if claimed is None or claimed == name:
            return name
    return user_name(ids.uid, lookup)
