"""Reading secrets from files or environment variables, never from argv, and keeping them out of output.

A `Secret` prints as `***` in repr, str and f-strings, so it cannot leak through a log line or an
exception message by accident; call `reveal()` at the one place the value is needed.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from core.errors import SecretError
from core.files import read_regular_file

log = logging.getLogger("werne.secrets")
MAX_SECRET_BYTES = 64 * 1024


class Secret:
    """A secret value that never shows itself in str(), repr() or format()."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str):
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(***, source={self.source!r})"

    def __str__(self) -> str:
        return "***"

    def __format__(self, format_spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret(*, file: str | Path | None = None, env: str | None = None, what: str) -> Secret:
    """Read a secret from the environment variable `env` if set, else from `file`.

    Raises SecretError naming where it looked, never the value.
    """
    if env and os.environ.get(env):
        return Secret(os.environ[env].strip(), source=f"${env}")
    if file:
        path = Path(file).expanduser()
        # A path that names no file may be the secret itself, pasted into the *_file setting:
        # the path is named only once the file is there, so it is a path and not a secret.
        try:
            value = read_regular_file(path, limit=MAX_SECRET_BYTES).decode("utf-8").strip()
        except FileNotFoundError:
            if _looks_like_a_secret(path.name):
                raise SecretError(f"{what}: the configured secret file does not exist (its name is not "
                                  "shown: it looks like the secret itself was pasted there)") from None
            raise SecretError(f"{what}: secret file {path} does not exist") from None
        except PermissionError:
            raise SecretError(f"{what}: secret file {path} is not readable") from None
        except OSError as e:
            raise SecretError(f"{what}: cannot read secret file {path}: {e.strerror or e.__class__.__name__}") from None
        except UnicodeDecodeError:
            raise SecretError(f"{what}: cannot read secret file {path}: not UTF-8 text") from None
        if not value:
            raise SecretError(f"{what}: secret file {path} is empty")
        warn_if_others_can_read(path, what)
        return Secret(value, source=str(path))
    where = f"${env}" if env else "no file configured"
    raise SecretError(f"{what}: no secret found ({where})")


def _looks_like_a_secret(name: str) -> bool:
    """A file name that is long, random-looking token text (letters and digits, base64 or hex
    alphabet, no dot), as a pasted key would be; names people give key files are not."""
    return (
        len(name) >= 16
        and "." not in name
        and all(c.isascii() and (c.isalnum() or c in "+/=_-") for c in name)
        and any(c.isdigit() for c in name)
        and any(c.isalpha() for c in name)
    )


# (path, mode) pairs warned about in this process: one warning each, however often a file is read.
_warned: set[tuple[str, int]] = set()


def warn_if_others_can_read(path: Path, what: str) -> None:
    """Warn once per process (and file mode) when every user on this machine can read a secret file."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o004 and (str(path), mode) not in _warned:
        _warned.add((str(path), mode))
        # A warning, not an error: refusing would stop a nightly run over a chmod. Group access
        # is fine (deploy/: root:werne 0640).
        log.warning("warning: %s: secret file %s is readable by every user on this machine (mode %s); "
                    "chmod o-r it", what, path, oct(stat.S_IMODE(mode)))


def redact(text: str, secrets: list[Secret]) -> str:
    """Replace every secret's value in text by ***; for output of tools we do not control."""
    for s in secrets:
        v = s.reveal()
        if v:
            text = text.replace(v, "***")
    return text
