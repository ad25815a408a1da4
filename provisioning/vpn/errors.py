"""The vpn package's exception tree; every class maps to a documented exit code.

    VPNError                       could not run (exit 3)
    ├── GatewayUnreachableError    the gateway could not be reached or configured; nothing changed
    ├── GatewayNotReadyError       the gateway has no key yet (run `werne vpn gateway apply`)   (exit 2)
    └── VPNInputError              bad input; nothing changed                                    (exit 2)
        ├── PoolExhaustedError     no free address left in vpn.pool_v4 / vpn.pool_v6
        ├── AddressCollisionError  an address is already held by another active peer
        ├── PublicKeyError         a laptop returned a malformed or duplicate public key
        └── UnknownPeerError       the named host is not in the inventory / has no VPN peer
"""

from __future__ import annotations

from core.errors import EXIT_COULD_NOT_RUN, EXIT_INPUT, InputError, WerneError


class VPNError(WerneError):
    """Root of every error the vpn package raises."""

    exit_code = EXIT_COULD_NOT_RUN


class GatewayUnreachableError(VPNError):
    """The VPN gateway could not be reached or did not take the new config; nothing was changed."""


class VPNInputError(VPNError, InputError):
    """The input (host names, config, pool, keys) is wrong; nothing was changed."""

    exit_code = EXIT_INPUT


class GatewayNotReadyError(VPNInputError):
    """The gateway has not been set up yet, so laptops cannot be given its public key."""


class PoolExhaustedError(VPNInputError):
    """The configured address pool has no free address left."""


class AddressCollisionError(VPNInputError):
    """An address requested for a peer is held by another active peer or lies outside the pool."""


class PublicKeyError(VPNInputError):
    """A public key returned by a laptop is malformed or already used by another peer."""


class UnknownPeerError(VPNInputError):
    """The named host is not a laptop in the inventory or has no VPN peer record."""
