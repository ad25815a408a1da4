"""Fixtures of the compliance tests: synthetic facts stored as runs, the iPad world, lab laptops and
the VPN lab for the runs over real devices."""

# Fixtures used by this folder's tests (imported names are what pytest registers here).
from tests.fixtures.alerts import smtp_sink  # noqa: F401
from tests.fixtures.compliance import compliance_config, compliance_db, ipad_world, two_runs  # noqa: F401
from tests.fixtures.lab import lab_config, lab_factory  # noqa: F401
from tests.fixtures.provisioning import werne_cli  # noqa: F401
from tests.fixtures.vpn import vpn_lab  # noqa: F401
