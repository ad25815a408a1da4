"""Fixtures of the enrolment tests: real NanoDEP, the fake Apple DEP, a site wired to both, KMFDDM; for
the sign-in tests a real LDAP directory (slapd), a real OpenID Connect provider and a real browser."""

# Fixtures used by this folder's tests (imported names are what pytest registers here).
from tests.fixtures.browser import browser  # noqa: F401
from tests.fixtures.directory import directory  # noqa: F401
from tests.fixtures.enrolment import enrol_site, fake_dep, nanodep  # noqa: F401
from tests.fixtures.kmfddm import kmfddm  # noqa: F401
from tests.fixtures.oidc import oidc_provider_factory  # noqa: F401
