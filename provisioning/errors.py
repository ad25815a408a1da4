"""The provisioning exception tree.

    ProvisioningError (core.errors.WerneError)     provisioning could not run          -> exit 3
    ├── SSHKeyError (also InputError)               the private key file is unusable    -> exit 2
    ├── HostSelectionError (also InputError)        no hosts, or hosts and --all both   -> exit 2
    ├── KnownHostsError                             the pinned known_hosts file is unusable
    ├── AnsibleRunError                             ansible-playbook did not run to the end
    └── ProvisioningInterrupted                     Ctrl-C or SIGTERM stopped the run   -> exit 130

A host that fails or is unreachable is not an exception: it is a result (see provisioning.models).
"""

from __future__ import annotations

from core.errors import EXIT_INPUT, EXIT_INTERRUPTED, InputError, WerneError

# The one sentence for a host whose key differs from the pinned one, from pre-flight (paramiko) and
# from ssh under Ansible alike (a result's reason, not an exception).
HOST_KEY_CHANGED = "host key changed: possible interception"


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
