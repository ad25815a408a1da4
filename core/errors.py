"""The root of werne's exception tree and the exit codes the CLI maps it to.

    WerneError                 (exit 3 unless a subclass says otherwise)
    ├── InputError             bad input or configuration           -> exit 2
    │   ├── ConfigError        the config file or a setting is wrong
    │   ├── InventoryError     the inventory does not validate
    │   ├── InputFileError     an input file is missing, not a regular file, too large, unreadable
    │   └── SecretError        a secret file or variable is missing or unreadable
    ├── StateError             the state database cannot be used     -> exit 3
    ├── OutputError            a file cannot be written: exit 2 where the user named a place that
    │                          cannot take it (read-only, no such folder), 3 when the disk is full
    ├── LockHeldError          another run holds the lock            -> exit 3
    └── (per package)          provisioning.ProvisioningError, mdm_client.MDMError, ...

Documented exit codes (README, "Exit codes"):
    0 success / all compliant, 1 findings or failed hosts, 2 bad input or config,
    3 could not run (unreachable service, lock held, state unusable), 128 + signal number when a
    signal ended the run: 130 interrupted (SIGINT), 143 terminated (SIGTERM), 129 (SIGHUP).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_INPUT = 2
EXIT_COULD_NOT_RUN = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class WerneError(Exception):
    """Root of every error werne raises on purpose; the CLI prints it as one line."""

    exit_code = EXIT_COULD_NOT_RUN


class InputError(WerneError, ValueError):
    """The user's input or configuration is wrong; nothing was changed."""

    exit_code = EXIT_INPUT


class ConfigError(InputError):
    """The configuration file or one of its settings is invalid."""


class InventoryError(InputError):
    """The inventory does not validate; carries every problem found, not only the first."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        first = problems[0] if problems else "inventory is invalid"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{first}{more}")


class InputFileError(InputError):
    """An input file is missing, not a regular file (a FIFO, a device), too large or unreadable."""


class SecretError(InputError):
    """A secret file or environment variable is missing or unreadable."""


class StateError(WerneError):
    """The state database or state directory cannot be used."""


class OutputError(WerneError):
    """A file cannot be written; the exit code says whose problem it is (core.files.write_output)."""

    def __init__(self, message: str, exit_code: int = EXIT_COULD_NOT_RUN):
        super().__init__(message)
        self.exit_code = exit_code


class LockHeldError(WerneError):
    """Another run holds the lock for this job."""
