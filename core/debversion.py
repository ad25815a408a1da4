"""Debian's version order (dpkg's lib/dpkg/version.c), for matching installed packages against
security data: `compare(a, b)` is <0, 0, >0 exactly as `dpkg --compare-versions a lt|eq|gt b`.

The facts module (playbooks/files/werne_facts.py) carries its own copy for sorting kernels on the
laptop, where werne is not installed; tests hold both against the real dpkg on the same pairs.
"""

from __future__ import annotations

import functools


def _order(c: str) -> int:
    if not c or c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0

    def ch(s: str, k: int) -> str:
        return s[k] if k < len(s) else ""

    while i < len(a) or j < len(b):
        first_diff = 0
        while (ch(a, i) and not ch(a, i).isdigit()) or (ch(b, j) and not ch(b, j).isdigit()):
            ac, bc = _order(ch(a, i)), _order(ch(b, j))
            if ac != bc:
                return ac - bc
            i, j = i + 1, j + 1
        while ch(a, i) == "0":
            i += 1
        while ch(b, j) == "0":
            j += 1
        while ch(a, i).isdigit() and ch(b, j).isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i, j = i + 1, j + 1
        if ch(a, i).isdigit():
            return 1
        if ch(b, j).isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


@functools.lru_cache(maxsize=65536)
def split(version: str) -> tuple[int, str, str]:
    """(epoch, upstream version, Debian revision) as dpkg parses a version string."""
    version = version.strip()
    epoch_s, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    try:
        epoch = int(epoch_s or 0)
    except ValueError:
        raise ValueError(f"not a Debian version (bad epoch): {version!r}") from None
    return epoch, upstream, revision


def compare(a: str, b: str) -> int:
    """<0, 0, >0 as `dpkg --compare-versions a lt|eq|gt b`."""
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)


def lower(a: str, b: str) -> bool:
    """a is an older version than b."""
    return compare(a, b) < 0
