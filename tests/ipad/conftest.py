"""Fixtures of the iPad tests: real NanoMDM worlds with simulated iPads, the webhook receiver, KMFDDM,
the DDM world; PostgreSQL comes session-wide from tests/conftest.py."""

# Fixtures used by this folder's tests (imported names are what pytest registers here).
from tests.fixtures.kmfddm import kmfddm  # noqa: F401
from tests.fixtures.mdm import mdm_world, webhook_server  # noqa: F401
from tests.ipad.ddm_world import ddm_world  # noqa: F401
