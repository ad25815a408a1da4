"""The exception tree of the mdm_client package; the CLI maps each class to an exit code.

    core.errors.WerneError
    └── MDMError                 root of mdm_client (exit 3: could not run)
        │                        (the exit-2 ones below are also core.errors.InputError)
        ├── CommandError         a command cannot be built from the given arguments      (exit 2)
        ├── MalformedReport      a device report or check-in is not a valid plist dict   (exit 2)
        ├── ProfileError         a profile cannot be built from its data file or config  (exit 2)
        ├── SchemaError          Apple's derived schema is missing or unusable            (exit 3)
        └── APIError             an API server unreachable or answering with an error     (exit 3)
            ├── NanoMDMError     NanoMDM (mdm_client.nanomdm)                             (exit 3)
            │   └── NanoMDMAuthError  NanoMDM refused the API key                         (exit 2)
            ├── NanoDEPError     NanoDEP or Apple's DEP behind it (mdm_client.nanodep);
            │                    enrolment.errors.DEPUnavailable is this class            (exit 3)
            └── KMFDDMError      KMFDDM, the declarative-management server (mdm_client.kmfddm) (exit 3)
                └── KMFDDMAuthError  KMFDDM refused the API key                           (exit 2)

The webhook receiver adds ipad.webhook.WebhookError.
"""

from __future__ import annotations

from typing import Any

from core.errors import EXIT_INPUT, InputError, WerneError


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


class APIError(MDMError):
    """An API server could not be reached or answered with an error.

    The message names the method and URL; `method`, `url`, `status` (None: no HTTP answer) and
    `server_message` (the server's own words, one line) are kept for callers that need them.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
        server_message: str | None = None,
    ):
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
        self.server_message = server_message


class NanoMDMError(APIError):
    """NanoMDM could not be reached, or answered with an error we cannot read per device."""

    def __init__(self, message: str, partial: Any = None, **details: Any):
        super().__init__(message, **details)
        # What was queued before the failure (an EnqueueResult), so callers can record it.
        self.partial = partial


class NanoMDMAuthError(NanoMDMError):
    """NanoMDM refused the API key (HTTP 401): check mdm.api_key_file or its variable."""

    exit_code = EXIT_INPUT


class NanoDEPError(APIError):
    """NanoDEP or Apple's DEP service (through NanoDEP's proxy) cannot be reached or refused the call."""


class KMFDDMError(APIError):
    """KMFDDM could not be reached or answered with an error (its own message is kept)."""


class KMFDDMAuthError(KMFDDMError):
    """KMFDDM refused the API key (HTTP 401): check ddm.api_key_file or its variable."""

    exit_code = EXIT_INPUT
