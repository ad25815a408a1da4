"""The provisioning exception tree.

    ProvisioningError (core.errors.WerneError)     provisioning could not run          -> exit 3
    ├── SSHKeyError (also InputError)               the private key file is unusable    -> exit 2
    ├── HostSelectionError (also InputError)        no hosts, or hosts and --all both   -> exit 2
    ├── KnownHostsError                             the pinned known_hosts file is unusable
    ├── AnsibleRunError                             ansible-playbook did not run to the end
    ├── ProvisioningInterrupted                     Ctrl-C or SIGTERM stopped the run   -> exit 130
    ├── HostUnreachable                             every SSH connect to one host failed
    ├── PinnedKeyRefused                            the host offers no key of a pinned type
    ├── RecoveryKeyError (also InputError)          a LUKS recovery key cannot be escrowed or shown -> exit 2
    └── LostLaptopError (also InputError)           a lock, erase or unlock refused     -> exit 2

A host that fails or is unreachable is not an exception: it is a result (see provisioning.models).
HostUnreachable and PinnedKeyRefused come out of `preflight.open_transport` only; each caller
makes them such a result (pre-flight) or its own error (the gateway reader).
"""

from __future__ import annotations

from core.errors import EXIT_INPUT, EXIT_INTERRUPTED, InputError, WerneError

# The one sentence for a host whose key differs from the pinned one, from pre-flight (paramiko) and
# from ssh under Ansible alike (a result's reason, not an exception).
HOST_KEY_CHANGED = "host key changed: possible interception"
# An unpinned host refused by ssh's strict checking: not interception, a missing first pre-flight.
HOST_KEY_NOT_PINNED = "host key not pinned yet: run `werne laptop preflight --accept-new HOST` after verifying it"


class ProvisioningError(WerneError):
    """Pre-flight or provisioning could not run at all."""


class SSHKeyError(ProvisioningError, InputError):
    """The SSH private key file is missing, unreadable, encrypted or not a key."""

    exit_code = EXIT_INPUT


class HostSelectionError(ProvisioningError, InputError):
    """The command names no hosts, or both host names and --all."""

    exit_code = EXIT_INPUT


class KnownHostsError(ProvisioningError):
    """The pinned known_hosts file in the state dir cannot be read or written."""


class AnsibleRunError(ProvisioningError):
    """ansible-playbook could not start or stopped before it reported on the hosts."""


class ProvisioningInterrupted(ProvisioningError):
    """A signal stopped the run; it is stored as 'interrupted'."""

    exit_code = EXIT_INTERRUPTED


class HostUnreachable(ProvisioningError):
    """Every SSH connection attempt to one host failed; the message is the last reason."""


class PinnedKeyRefused(ProvisioningError):
    """The host offers no host key of a type pinned for it: its key changed."""


class RecoveryKeyError(ProvisioningError, InputError):
    """A LUKS recovery key cannot be escrowed or shown: no escrow key, a wrong one, none stored, or a
    user not allowed (exit 2)."""

    exit_code = EXIT_INPUT


class LostLaptopError(ProvisioningError, InputError):
    """A lock, erase or unlock was refused before anything changed: unknown laptop, no pinned host
    key, a confirmation that does not match, or more laptops than the blast-radius limit (exit 2)."""

    exit_code = EXIT_INPUT
