"""The exception tree of the mdm_client package (the API clients); the CLI maps each class to an exit code.

    core.errors.WerneError
    └── MDMError                 root of mdm_client (exit 3: could not run)
        ├── Unreachable          a call got no HTTP answer (mdm_client.http; each client turns it
        │                        into its own APIError, so it never leaves the package)
        ├── SCEPError            the SCEP server unreachable or answering with an error     (exit 3)
        └── APIError             an API server unreachable or answering with an error       (exit 3)
            ├── NanoMDMError     NanoMDM (mdm_client.nanomdm)                               (exit 3)
            │   └── NanoMDMAuthError  NanoMDM refused the API key                           (exit 2)
            ├── NanoDEPError     NanoDEP or Apple's DEP behind it (mdm_client.nanodep);
            │                    enrolment.errors.DEPUnavailable is this class              (exit 3)
            ├── KMFDDMError      KMFDDM, the declarative-management server (mdm_client.kmfddm) (exit 3)
            │   └── KMFDDMAuthError  KMFDDM refused the API key                             (exit 2)
            └── AppsBooksError   Apple's Apps and Books service (mdm_client.appsbooks)      (exit 3)
                └── AppsBooksTokenError  Apple refused a location's token                    (exit 3)

The iPad side that uses these clients has its own tree (ipad.errors.IPadError).
"""

from __future__ import annotations

from typing import Any

from core.errors import EXIT_COULD_NOT_RUN, EXIT_INPUT, WerneError


class MDMError(WerneError):
    """Root of every error the mdm_client package raises on purpose."""


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
        # No answer, but the request may have reached NanoMDM (not a refused or timed-out connect).
        self.maybe_delivered = False


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


class AppsBooksError(APIError):
    """Apple's Apps and Books service could not be reached or answered with an ErrorResponse.

    `error_number` is Apple's errorNumber (None when there was no ErrorResponse).
    """

    def __init__(self, message: str, error_number: int | None = None, **details: Any):
        super().__init__(message, **details)
        self.error_number = error_number


class AppsBooksTokenError(AppsBooksError):
    """Apple refused the location's token (expired, revoked, invalid): nothing was changed (exit 3)."""

    exit_code = EXIT_COULD_NOT_RUN


class SCEPError(MDMError):
    """The SCEP server could not be reached or answered with an error."""


class Unreachable(MDMError):
    """A call that got no HTTP answer; the client turns it into its own APIError message.

    kind: "connect" (no connection; `refused` if the server side refused it), "timeout" (no answer
    in time) or "other" (any other requests failure); exc_name: the requests exception's class name.
    """

    def __init__(self, kind: str, exc_name: str, refused: bool = False):
        super().__init__(f"{kind}: {exc_name}")
        self.kind = kind
        self.exc_name = exc_name
        self.refused = refused

    @property
    def reason(self) -> str:
        return "connection refused" if self.refused else self.exc_name
