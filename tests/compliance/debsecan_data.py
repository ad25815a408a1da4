"""Debian's security data in debsecan's own input format, for running the real `debsecan` against
the same data werne matched (tests only: the tracker serves this format per suite at
.../tracker/debsecan/release/1/SUITE; offline, the same feed is written here from the JSON).

The format, as /usr/bin/debsecan's fetch_data reads it (zlib-compressed text):
    VERSION 1
    <vulnerability name>,<flags>,<description>            one per vulnerability, numbered from 0
    <blank>
    <package>,<vuln number>,<flags>,<fixed version>,<other fixed versions>
    <blank>
    <source>,<binary packages>                            (left empty here: no "obsolete" marks)
    <blank>
Package flags are 4 characters: S (source package), the urgency (L, M, H or blank), remote (R, ' '
or ?), F when a fix is available. An empty fixed version means every version is affected.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from compliance.vulns.feeds import Feed

URGENCY_LETTER = {"low": "L", "medium": "M", "high": "H"}


def debsecan_feed(feed: Feed, release: str) -> bytes:
    names: list[str] = []
    index: dict[str, int] = {}
    rows: list[str] = []
    for source, entries in sorted(feed.releases.get(release, {}).items()):
        for e in entries:
            if e.id not in index:
                index[e.id] = len(names)
                names.append(f"{e.id},,werne test data")
            flags = "S" + URGENCY_LETTER.get(e.urgency, " ") + "?" + ("F" if e.fixed else " ")
            rows.append(f"{source},{index[e.id]},{flags},{e.fixed or ''},")
    text = "VERSION 1\n" + "".join(n + "\n" for n in names) + "\n" + "".join(r + "\n" for r in rows) + "\n\n"
    return zlib.compress(text.encode())


def write_source(feed: Feed, release: str, directory: Path) -> str:
    """Write the feed where `debsecan --source URL --suite RELEASE` reads it; returns the URL."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / release).write_bytes(debsecan_feed(feed, release))
    return directory.as_uri() + "/"
