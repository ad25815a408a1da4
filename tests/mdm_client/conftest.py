"""Fixtures of the API client tests: a real KMFDDM."""

# Fixtures used by this folder's tests (imported names are what pytest registers here).
from tests.fixtures.kmfddm import kmfddm  # noqa: F401
