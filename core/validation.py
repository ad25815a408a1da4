"""One line from a pydantic ValidationError, the same way for every model werne validates."""

from __future__ import annotations

from pydantic import ValidationError


def first_error(e: ValidationError) -> str:
    """`loc: message` of the first error: pydantic's "Value error, " prefix dropped, and an extra
    key (a typo in a data file) said as "unknown key"."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg
