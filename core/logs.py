"""Log records that stay one safe line, whatever text from outside they carry.

A log line often quotes what a device, a browser or a server sent: a MachineInfo serial, a push
topic, an HTTP answer. Written raw, an ESC in it would drive the terminal of whoever reads the log
(`journalctl -f`, `tail`), and a line feed would forge a log line of its own. `install()` makes
every record of the process render its message through `core.text.line_safe`, at the one place
all handlers get it from (`LogRecord.getMessage`), so no handler, ours or uvicorn's, can write one
raw. The entry points call it once per process: the CLI, and the webhook supervisor (which
configures the service's logging anyway).
"""

from __future__ import annotations

import logging

from core.text import line_safe

# The format of a service's own log lines (the webhook workers; journald adds the time again).
SERVICE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SafeLogRecord(logging.LogRecord):
    """A log record whose message (the format string with its arguments) is one terminal-safe line."""

    def getMessage(self) -> str:  # noqa: N802 - logging's name
        return line_safe(super().getMessage())


def install() -> None:
    """Make every log record this process creates from now on a SafeLogRecord. Idempotent.

    Handlers stay as they are: logging's last-resort handler (warnings on stderr, the CLI's case),
    the webhook workers' basicConfig, uvicorn's own; each formats the message it gets from here."""
    logging.setLogRecordFactory(SafeLogRecord)
