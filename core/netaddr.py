"""Listen addresses in settings and options: `HOST:PORT` or `[IPv6]:PORT`, checked once, here."""

from __future__ import annotations

import ipaddress
import re

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?$")


def split_listen(value: str) -> tuple[str, int]:
    """(host, port) from `HOST:PORT`; ValueError naming what is wrong (never a wrapped-around port)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value[:60]!r}")
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port[:20]!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {host[:60]!r}") from None
    elif not _HOST_RE.match(host):
        raise ValueError(f"not a host name or address: {host[:60]!r}")
    return host, int(port)
