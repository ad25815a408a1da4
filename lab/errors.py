"""The lab's exception tree.

    LabError (core.errors.WerneError)        the lab could not do what was asked     -> exit 3
    ├── ImageBuildError                       the Debian base image could not be built
    ├── LabBootError                          a laptop did not boot or its sshd did not answer
    ├── LabServiceError                       a lab server (NanoMDM, nginx, ...) did not start or stop
    └── LabInputError (also InputError)       bad argument, e.g. an unknown host name -> exit 2
"""

from __future__ import annotations

from core.errors import EXIT_INPUT, WerneError


class LabError(WerneError):
    """The lab of laptops could not do what was asked."""


class ImageBuildError(LabError):
    """The Debian base image for the lab could not be built."""


class LabBootError(LabError):
    """A lab laptop did not boot, or its sshd did not answer in time."""


class LabServiceError(LabError):
    """A lab server (NanoMDM, scepserver, KMFDDM, nginx, the package source, ...) could not start or stop."""


class LabInputError(LabError, ValueError):
    """A bad argument to the lab, such as an unknown host name or an impossible laptop count."""

    exit_code = EXIT_INPUT
