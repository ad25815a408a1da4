"""Text from other people made safe for IT staff's terminal, and kept to one line.

Coordinators type request purposes on the web page, devices send their names, CSV files carry any
bytes: printed raw, an ESC or OSC sequence in them would drive the terminal of whoever runs
`werne enrol list` (retitle it, hide text, write to the clipboard, fake a prompt). Every CLI print
of such text goes through `terminal_safe`.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and the Unicode
# bidi overrides and isolates that make text display in another order than it is stored.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def terminal_safe(text: object) -> str:
    """`text` with every control character that could drive a terminal shown as a visible escape.

    Newlines and tabs stay (the CLI prints multi-line messages); ESC becomes the four characters
    `\\x1b`, so nothing reaches the terminal as a control sequence and the reader still sees that
    something odd was there.
    """
    s = "" if text is None else str(text)
    return _UNSAFE.sub(_escape, s)


def one_line(text: object, limit: int = 300) -> str:
    """A message (a server's answer, Ansible's reason) as one terminal-safe line: whitespace runs,
    newlines included, become one space; cut to `limit` characters with an ellipsis."""
    s = " ".join(terminal_safe(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"
