"""Reading JSON from outside (a saved catalogue, a server's answer) with one-line errors.

`json.loads` recurses once per nesting level: a file or an answer nested a few thousand levels deep
raises RecursionError, which no `except ValueError` catches. Every JSON werne did not write itself
is decoded here: the error is a JSONInputError (an InputError, so also a ValueError, which callers
that expect json's own errors keep catching).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.files import DEFAULT_LIMIT, read_input


class JSONInputError(InputError):
    """Text that should be JSON is not, or cannot be decoded (too deeply nested); `reason` says why."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


def loads(data: bytes | str, source: str) -> Any:
    """The JSON value of `data`; raises JSONInputError naming `source`."""
    try:
        return json.loads(data)
    except RecursionError:
        raise JSONInputError(source, "not JSON werne can read: nested too deeply") from None
    except UnicodeDecodeError:
        raise JSONInputError(source, "not JSON: not UTF-8 text") from None
    except ValueError as e:
        line = getattr(e, "lineno", None)
        raise JSONInputError(source, "not JSON" + (f" (line {line})" if line else "")) from None


def load_file(path: str | Path, what: str, limit: int = DEFAULT_LIMIT) -> Any:
    """The JSON value of a regular file the user named (never a FIFO or a device); InputFileError
    (`<what> <path> does not exist`, `...: not a regular file (a FIFO)`) or JSONInputError."""
    return loads(read_input(path, what, limit), f"{what} {path}")
