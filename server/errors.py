"""The exception tree of the server package; the CLI maps each class to an exit code.

core.errors.WerneError
└── ServerError                  root of the server package (exit 3: could not run)
    ├── ServerInputError         the config or an option cannot be deployed         (exit 2)
    ├── ServerInstallError       the install run could not be prepared or started   (exit 3)
    ├── BackupError              a backup or restore could not run (a dump, a service) (exit 3)
    └── ArchiveRefused           an archive or a restore target is refused, nothing changed (exit 2)

A playbook that fails on the server is a result (server.install.InstallResult), not an exception.
"""

from __future__ import annotations

from core.errors import InputError, WerneError


class ServerError(WerneError):
    """Root of every error the server package raises on purpose."""


class ServerInputError(ServerError, InputError):
    """The config or an option cannot be deployed (bad host name, missing TLS files, a mismatch)."""


class ServerInstallError(ServerError):
    """The install run could not be prepared (no wheel, no binaries, no connection)."""


class BackupError(ServerError):
    """A backup or restore could not run: a file unreadable, a dump or a service failed."""


class ArchiveRefused(ServerError, InputError):
    """An archive (truncated, altered, another site's, wrong password) or a restore target is refused."""
