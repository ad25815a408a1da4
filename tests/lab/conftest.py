"""Fixtures of the lab tests: lab laptops on demand."""

# Fixtures used by this folder's tests (imported names are what pytest registers here).
from tests.fixtures.lab import lab_config, lab_factory  # noqa: F401
