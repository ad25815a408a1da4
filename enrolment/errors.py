"""The exception tree of the enrolment package; the CLI maps each class to an exit code.

core.errors.WerneError
└── EnrolmentError               root of enrolment (exit 3: could not run)
    ├── RequestInputError        a request, serial list or upload is invalid      (exit 2)
    ├── NotFound                 no such request or user *visible to the caller*   (exit 2)
    ├── NotAllowed               the caller's role may not do this                 (exit 2)
    ├── InvalidTransition        the request is not in a state that allows this    (exit 2)
    ├── AuthError                wrong user name or password, or account disabled  (exit 2)
    ├── RateLimited              the login backoff of this user and address runs   (exit 2)
    ├── DEPProfileError          the DEP profile data file is invalid              (exit 2)
    ├── ServeError               the web page cannot listen (the port is in use)   (exit 3)
    └── ArrivalError             the profile set could not be sent to an arrived iPad (exit 3)

DEPUnavailable (NanoDEP or Apple's DEP service cannot be used, exit 3) is the NanoDEP client's
error, mdm_client.errors.NanoDEPError: the client raises it, the DEP use cases pass it on.
"""

from __future__ import annotations

from datetime import timedelta

from core.errors import EXIT_INPUT, WerneError
from mdm_client.errors import NanoDEPError


class EnrolmentError(WerneError):
    """Root of every error the enrolment package raises on purpose."""


class RequestInputError(EnrolmentError, ValueError):
    """A request, its serial list or its uploaded file is invalid; carries every problem found."""

    exit_code = EXIT_INPUT

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        first = self.problems[0] if self.problems else "invalid request"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first}{more}")


class NotFound(EnrolmentError, LookupError):
    """No such request or user, as far as the caller may know (other schools' ids look the same)."""

    exit_code = EXIT_INPUT


class NotAllowed(EnrolmentError, PermissionError):
    """The caller's role does not allow this action."""

    exit_code = EXIT_INPUT


class InvalidTransition(EnrolmentError):
    """The request is not in a state that allows this action."""

    exit_code = EXIT_INPUT


class AuthError(EnrolmentError):
    """Wrong user name or password, or the account is disabled."""

    exit_code = EXIT_INPUT


class RateLimited(EnrolmentError):
    """Too many failed logins for this user from this address: wait `retry_after` before the next try."""

    exit_code = EXIT_INPUT

    def __init__(self, message: str, retry_after: timedelta = timedelta(0)):
        super().__init__(message)
        self.retry_after = retry_after


class DEPProfileError(EnrolmentError, ValueError):
    """The DEP enrolment profile data file is missing or invalid."""

    exit_code = EXIT_INPUT


class ServeError(EnrolmentError):
    """`werne web serve` cannot listen on its address (in use, or not this host's)."""


# NanoDEP or Apple's DEP service cannot be reached or refused the call.
DEPUnavailable = NanoDEPError


class ArrivalError(EnrolmentError):
    """Installing the profile set on an iPad that has just enrolled failed."""
