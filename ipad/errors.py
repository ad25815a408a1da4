"""The exception tree of the iPad side (the `ipad` package); the CLI maps each class to an exit code.

    core.errors.WerneError
    └── IPadError                root of the ipad package                                    (exit 3)
        │                        (the exit-2 ones below are also core.errors.InputError)
        ├── CommandError         a command cannot be built from the given arguments          (exit 2)
        ├── MalformedReport      a device report or check-in is not a valid plist dict       (exit 2)
        ├── ProfileError         a profile cannot be built from its data file or config      (exit 2)
        ├── DeclarationError     a declaration cannot be built or Apple's schema refuses it   (exit 2)
        ├── SchemaError          Apple's derived schema is missing or unusable                (exit 3)
        ├── SafetyError          refused by a safety rule (blast radius, wipe confirmation)   (exit 2)
        ├── UnknownDevicesError  serials not in the inventory and never enrolled             (exit 2)
        ├── NotInLostModeError   a location or sound asked for an iPad not in lost mode       (exit 2)
        ├── EscrowError          the Activation Lock escrow cannot be used                    (exit 2)
        ├── ReturnToServiceError Return to Service cannot be used as asked                    (exit 2)
        ├── MoveError            a move or retirement refused before anything changed         (exit 2)
        ├── AppsError            the app list is broken, or the licences do not suffice       (exit 2)
        ├── CatalogueError       Apple's OS catalogue snapshot is missing, malformed or old   (exit 2)
        ├── ClassroomError       a class, class list or lesson is invalid; nothing was stored (exit 2)
        ├── LessonConflict       a lesson window is in the past or overlaps another           (exit 2)
        ├── ClassroomDenied      the class is not the caller's (another school's, another teacher's) (exit 2)
        ├── PushCertError        the push certificate or its key cannot be used              (exit 2)
        ├── SCEPSetupError       the SCEP CA or its challenge cannot be made or read          (exit 2)
        ├── NanoMDMSchemaError   NanoMDM's database schema cannot be found or loaded          (exit 2)
        ├── NanoMDMStorageError  NanoMDM's database cannot be reached or tidied               (exit 3)
        ├── WebhookError         the webhook receiver cannot start                            (exit 3)
        └── BadEvent             a webhook body that cannot be stored (answered 4xx, never raised to the CLI)

The API clients the iPad side drives raise their own tree (mdm_client.errors.MDMError); code that
stops on either catches both.
"""

from __future__ import annotations

from core.errors import InputError, WerneError


class IPadError(WerneError):
    """Root of every error the ipad package raises on purpose."""


class CommandError(IPadError, InputError):
    """A command cannot be built from the given arguments."""


class MalformedReport(IPadError, InputError):
    """A device's report or check-in message is not a plist dictionary with the keys Apple requires."""


class ProfileError(IPadError, InputError):
    """A configuration profile cannot be built: broken data file, missing secret or bad setting."""


class DeclarationError(IPadError, InputError):
    """A declaration cannot be built: broken data file, unknown group or a value Apple's schema refuses."""


class SchemaError(IPadError):
    """The derived Apple schema file is missing, unreadable or not in the expected format."""


class SafetyError(IPadError, InputError):
    """An action was refused by a safety rule (blast radius, wipe confirmation); nothing was sent."""

    exit_code = 2


class UnknownDevicesError(IPadError, InputError):
    """Serials or ids that are not in the registry or the inventory."""

    exit_code = 2

    def __init__(self, message: str, unknown: list[str]):
        super().__init__(message)
        self.unknown = unknown


class NotInLostModeError(IPadError, InputError):
    """A location or a sound was asked for an iPad that is not in lost mode; nothing was sent (exit 2)."""

    exit_code = 2


class EscrowError(IPadError, InputError):
    """The escrow cannot be used: no key, a wrong key, no code stored, or a user not allowed (exit 2)."""


class ReturnToServiceError(IPadError, InputError):
    """Return to Service cannot be used as asked (no Wi-Fi profile, no enrolment profile); nothing sent."""


class MoveError(IPadError, InputError):
    """A move or retirement was refused before anything changed (exit 2)."""


class AppsError(IPadError, InputError):
    """The app list is broken: unreadable, bad types, duplicate ids, unknown groups or apps (exit 2)."""


class CatalogueError(IPadError, InputError):
    """Apple's catalogue snapshot is missing, malformed or too old; nothing was sent."""


class PushCertError(IPadError, InputError):
    """The push certificate or its key cannot be used; nothing was installed."""


class SCEPSetupError(IPadError, InputError):
    """The SCEP CA or its challenge cannot be made, imported or read."""


class NanoMDMSchemaError(IPadError, InputError):
    """NanoMDM's schema cannot be found or loaded."""


class NanoMDMStorageError(IPadError):
    """NanoMDM's database cannot be reached, or its leftover commands cannot be deleted."""


class WebhookError(IPadError):
    """The webhook receiver cannot start (bad listen address, port in use, unusable database)."""


class BadEvent(IPadError, ValueError):
    """A request body that is not a storable NanoMDM webhook event; carries the HTTP status."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class ClassroomError(IPadError, InputError):
    """A class, a class list (CSV) or a lesson is invalid; carries every problem, nothing was stored."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        first = self.problems[0] if self.problems else "invalid class"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}")


class LessonConflict(ClassroomError):
    """A lesson window is in the past, or overlaps another lesson of the class."""


class ClassroomDenied(IPadError, InputError):
    """The class is not the caller's to see or act on (another school's, another teacher's)."""
