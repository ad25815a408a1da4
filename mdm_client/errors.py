"""The exception tree of the mdm_client package; the CLI maps each class to an exit code.

    core.errors.WerneError
    └── MDMError                 root of mdm_client (exit 3: could not run)
        │                        (the exit-2 ones below are also core.errors.InputError)
        ├── CommandError         a command cannot be built from the given arguments      (exit 2)
        ├── MalformedReport      a device report or check-in is not a valid plist dict   (exit 2)
        ├── ProfileError         a profile cannot be built from its data file or config  (exit 2)
        └── SchemaError          Apple's derived schema is missing or unusable            (exit 3)

Other helpers add their own subclasses of MDMError (the NanoMDM API client, the webhook receiver).
"""

from __future__ import annotations

from core.errors import InputError, WerneError


class MDMError(WerneError):
    """Root of every error the mdm_client package raises on purpose."""


class CommandError(MDMError, InputError):
    """A command cannot be built from the given arguments."""


class MalformedReport(MDMError, InputError):
    """A device's report or check-in message is not a plist dictionary with the keys Apple requires."""


class ProfileError(MDMError, InputError):
    """A configuration profile cannot be built: broken data file, missing secret or bad setting."""


class SchemaError(MDMError):
    """The derived Apple schema file is missing, unreadable or not in the expected format."""
