"""Fixtures of the fakes' contract tests: the fake Apple DEP and a real NanoDEP to hold it against."""

# Fixtures used by this folder's tests (imported names are what pytest registers here).
from tests.fixtures.enrolment import fake_dep, nanodep  # noqa: F401
