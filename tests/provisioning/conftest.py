"""Fixtures of the provisioning tests: lab laptops, the CLI and SSH on a lab's config, the VPN lab."""

# Fixtures used by this folder's tests (imported names are what pytest registers here).
from tests.fixtures.lab import lab_config, lab_factory  # noqa: F401
from tests.fixtures.provisioning import lab_ssh, werne_cli  # noqa: F401
from tests.fixtures.vpn import vpn_lab  # noqa: F401
